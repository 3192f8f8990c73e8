"""Settings are built once at the edge from options and the environment, then passed down: every
ENGINEFAB_* variable the docs name still works, an option beats its variable, a malformed value
is a message naming the variable (exit 2), and no module below the CLI reads the environment."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from enginefab.core.archivelimits import DEFAULT as DEFAULT_LIMITS
from enginefab.core.errors import EnginefabError
from enginefab.core.ocischema import PACKAGED
from enginefab.core.reporter import Recording, plain
from enginefab.core.settings import DEFAULT_BUILDER, VARIABLES, Settings
from tests.conftest import ROOT

PACKAGE = ROOT / "enginefab"


def test_defaults_follow_the_cache_and_the_checkout(tmp_path):
    proj = tmp_path / "proj"
    (proj / "engines").mkdir(parents=True)
    (proj / "pyproject.toml").write_text("")
    (proj / "sub").mkdir()
    s = Settings.from_env({"HOME": str(tmp_path / "home")}, cwd=proj / "sub")
    assert s.root == proj.resolve()
    assert s.cache == tmp_path / "home" / ".cache" / "enginefab"
    assert s.store == s.cache / "store" and s.downloads == s.cache / "downloads"
    assert (s.mirrors, s.threads, s.run_timeout, s.quiet) == (None, None, 7200.0, False)
    assert (s.archive, s.builder_id, s.oci_schemas) == (DEFAULT_LIMITS, DEFAULT_BUILDER, PACKAGED)
    xdg = Settings.from_env({"XDG_CACHE_HOME": str(tmp_path / "xdg")}, cwd=proj)
    assert xdg.cache == tmp_path / "xdg" / "enginefab"


def test_every_variable_sets_its_field(tmp_path):
    env = {"ENGINEFAB_ROOT": str(tmp_path / "root"), "ENGINEFAB_CACHE": str(tmp_path / "c"),
           "ENGINEFAB_STORE": str(tmp_path / "st"), "ENGINEFAB_MIRRORS": str(tmp_path / "m.toml"),
           "ENGINEFAB_THREADS": "3", "ENGINEFAB_RUN_TIMEOUT": "90.5", "ENGINEFAB_ARCHIVE_MAX_BYTES": "1000",
           "ENGINEFAB_ARCHIVE_MAX_ENTRIES": "20", "ENGINEFAB_ARCHIVE_MAX_RATIO": "7", "ENGINEFAB_QUIET": "1",
           "ENGINEFAB_BUILDER_ID": "https://ci.example/job/1", "ENGINEFAB_OCI_SCHEMAS": str(tmp_path / "schemas"),
           "ENGINEFAB_REGISTRY_USER": "u"}
    s = Settings.from_env(env)
    assert s.root == (tmp_path / "root").resolve() and s.cache == tmp_path / "c" and s.store == tmp_path / "st"
    assert s.mirrors == tmp_path / "m.toml" and s.threads == 3 and s.run_timeout == 90.5 and s.quiet
    assert (s.archive.max_bytes, s.archive.max_entries, s.archive.max_ratio) == (1000, 20, 7)
    assert s.builder_id == "https://ci.example/job/1" and s.oci_schemas == tmp_path / "schemas"
    assert s.environ["ENGINEFAB_REGISTRY_USER"] == "u"  # credentials are read from here, below the edge
    with pytest.raises(TypeError):
        s.environ["X"] = "y"  # type: ignore[index]


def test_an_option_beats_its_variable_and_empty_means_unset(tmp_path):
    env = {"ENGINEFAB_CACHE": str(tmp_path / "c"), "ENGINEFAB_STORE": "", "ENGINEFAB_ARCHIVE_MAX_RATIO": "7",
           "ENGINEFAB_THREADS": " "}
    s = Settings.from_env(env, store=str(tmp_path / "flag"), archive_max_ratio=9, quiet=True, root=tmp_path)
    assert s.store == tmp_path / "flag" and isinstance(s.store, Path)
    assert s.archive.max_ratio == 9 and s.quiet and s.root == tmp_path.resolve() and s.threads is None
    assert Settings.from_env(env, store=None).store == tmp_path / "c" / "store"  # None: the option was not given
    assert Settings.from_env(env, cache=tmp_path / "other").store == tmp_path / "other" / "store"
    with pytest.raises(TypeError, match="no field colour"):
        Settings.from_env(env, colour="red")


@pytest.mark.parametrize(("var", "value", "says"), [
    ("ENGINEFAB_THREADS", "lots", "ENGINEFAB_THREADS='lots' is not a whole number"),
    ("ENGINEFAB_RUN_TIMEOUT", "2h", "ENGINEFAB_RUN_TIMEOUT='2h' is not a positive number of seconds"),
    ("ENGINEFAB_RUN_TIMEOUT", "-5", "is not a positive number of seconds"),
    ("ENGINEFAB_ARCHIVE_MAX_RATIO", "lots", "ENGINEFAB_ARCHIVE_MAX_RATIO='lots' is not a whole number"),
    ("ENGINEFAB_ARCHIVE_MAX_BYTES", "0", "an archive limit must be positive (got 0 for ENGINEFAB_ARCHIVE_MAX_BYTES)"),
])
def test_a_malformed_variable_is_named_with_its_fix(var, value, says):
    with pytest.raises(EnginefabError) as ei:
        Settings.from_env({var: value})
    assert says in ei.value.message and ei.value.fix


def test_the_docs_table_lists_every_variable():
    text = (ROOT / "docs" / "usage.md").read_text()
    for var, *_ in VARIABLES:
        for name in var.split(", "):
            assert f"`{name}`" in text, f"docs/usage.md's settings table lacks {name}"


def test_a_recording_reporter_keeps_what_was_said():
    r = Recording()
    r.info("[bold]build[/] demo")
    r.warn("[yellow]x[/] y")
    with r.progress("wheel", 10) as bar:
        bar.advance(4)
        bar.advance(6)
    assert (r.lines, r.warnings, r.progressed) == (["build demo"], ["x y"], {"wheel": 10})
    assert plain("[red]✗[/] a[0] [bold]b[/bold]") == "✗ a[0] b"  # markup tags go, brackets of text stay


# -- nothing below the CLI reads the environment --------------------------------------------------

#: modules that build a child process's environment from ours (what a subprocess inherits: PATH,
#: proxies, a CA bundle), never a setting of enginefab
CHILD_ENV_BUILDERS = {
    "enginefab/check/podman.py": "podman's environment (XDG_RUNTIME_DIR, PATH) plus its own config",
    "enginefab/check/cst.py": "container-structure-test's environment plus a private TMPDIR",
    "enginefab/check/accelerator.py": "RANK_TABLE_FILE handed on to an Ascend collective probe",
    "enginefab/transport/git.py": "git's PATH (the rest of git's environment is fixed)",
}


def environ_reads(path: Path, root: Path = ROOT) -> list[str]:
    """`file:line` for every read of the environment: os.environ, os.getenv, os.environb."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "environb", "getenv", "putenv", "unsetenv") \
                and isinstance(node.value, ast.Name) and node.value.id == "os":
            out.append((node.lineno, f"os.{node.attr}"))
        elif isinstance(node, ast.ImportFrom) and node.module == "os" \
                and any(a.name in ("environ", "environb", "getenv") for a in node.names):
            out.append((node.lineno, "from os import …"))
    return [f"{path.relative_to(root)}:{line} {what}" for line, what in sorted(out)]


def test_no_module_below_the_cli_reads_the_environment():
    found = [hit for p in sorted(PACKAGE.rglob("*.py")) if p.relative_to(PACKAGE).parts[0] != "cli"
             and str(p.relative_to(ROOT)) not in CHILD_ENV_BUILDERS for hit in environ_reads(p)]
    assert found == [], "read it in core.settings.Settings.from_env and pass the value down:\n" + "\n".join(found)
    assert all((ROOT / p).is_file() and environ_reads(ROOT / p) for p in CHILD_ENV_BUILDERS), \
        "an allow-listed module no longer reads the environment: drop it from CHILD_ENV_BUILDERS"


def test_the_environment_scan_finds_every_form(tmp_path):
    (tmp_path / "enginefab").mkdir()
    mod = tmp_path / "enginefab" / "m.py"
    mod.write_text("import os\nfrom os import getenv\nA = os.environ.get('X')\nB = os.getenv('Y')\n"
                   "os.environ['Z'] = '1'\nC = {'environ': 1}\n")
    assert environ_reads(mod, tmp_path) == ["enginefab/m.py:2 from os import …", "enginefab/m.py:3 os.environ",
                                            "enginefab/m.py:4 os.getenv", "enginefab/m.py:5 os.environ"]


# -- what the edge passes down reaches the stage ---------------------------------------------------


def test_the_creation_order_is_a_builder_parameter_and_never_reaches_the_layer(tmp_path):
    """The determinism tests' reverse order (once an environment knob): the stager creates the
    inputs in the other order, and the layer's digest is the same."""
    from enginefab.assemble.builder import Builder
    from enginefab.assemble.staging import in_reverse
    from enginefab.assemble.store import Store
    from enginefab.core.definition import Input, Layer
    from tests.conftest import demo_definition

    src = tmp_path / "src"
    src.mkdir()
    inputs = []
    for name in ("a.txt", "b.txt", "c.txt"):
        (src / name).write_text(f"{name}\n")
        inputs.append(Input(kind="url", name=name, version="1", url=(src / name).as_uri(), sha256="0" * 64, size=3,
                            filename=name, dest=f"/opt/{name}", unpack=False))
    layer = Layer(id="archives/three", kind="archives", inputs=inputs)
    defn = demo_definition().model_copy(update={"layers": [layer]})
    digests, orders = [], []
    for n, order in enumerate((None, in_reverse)):
        fetched: list[str] = []

        def fetch(inp, image, fetched=fetched):
            fetched.append(inp.name)
            return src / inp.name

        kw = {"creation_order": order} if order else {}
        entry = Builder(Store(tmp_path / f"store{n}"), fetch, **kw).pack_layer(defn, layer, f"k{n}", [])
        digests.append(entry["digest"])
        orders.append(fetched)
    assert orders == [["a.txt", "b.txt", "c.txt"], ["c.txt", "b.txt", "a.txt"]]
    assert digests[0] == digests[1]


def test_a_malformed_variable_stops_the_command_with_its_fix():
    from tests.conftest import enginefab

    p = enginefab("build", "--demo", "--out", "/nonexistent/never", env={"ENGINEFAB_RUN_TIMEOUT": "2h"})
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "ENGINEFAB_RUN_TIMEOUT='2h' is not a positive number of seconds" in p.stderr
    assert "set ENGINEFAB_RUN_TIMEOUT to seconds" in p.stderr
    p = enginefab("build", "--demo", "--out", "/nonexistent/never", "--creation-order", "sideways")
    assert p.returncode == 2 and "given or reverse" in p.stderr


def test_what_a_run_learns_belongs_to_its_session_not_the_process(tmp_path):
    """Which hosts answer and the index pages read were process-wide caches: now two sessions
    (two stores, a test's and the user's) never see each other's."""
    import socket

    from enginefab.transport.session import Session

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/simple/"
    first = Session(downloads=tmp_path / "a")
    assert first.unreachable_host(url) is None
    listener.close()
    assert first.unreachable_host(url) is None  # asked once per session
    assert "127.0.0.1 is unreachable from here" in (Session(downloads=tmp_path / "b").unreachable_host(url) or "")
    made = []
    assert first.remember(("pypi", "x"), lambda: made.append(1) or ["page"]) == ["page"]
    assert first.remember(("pypi", "x"), lambda: made.append(2) or ["other"]) == ["page"] and made == [1]
    assert Session(downloads=tmp_path / "c").remember(("pypi", "x"), lambda: ["fresh"]) == ["fresh"]
