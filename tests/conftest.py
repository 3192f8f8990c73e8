"""Shared fixtures: the real matrix, demo images built once per session, a real registry.

Downloads go to the shared cache (~/.cache/enginefab/downloads, or $ENGINEFAB_CACHE), so a
second run fetches nothing; every store a test builds into is its own temporary directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import netguard

ROOT = Path(__file__).resolve().parent.parent
OCI_SCHEMAS = ROOT / "enginefab" / "core" / "oci_schemas"  # package data: no test needs ../shared


def enginefab(*args: str, env: dict | None = None, check: bool = False, cwd: Path = ROOT,
              timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run the real CLI as a user would."""
    e = dict(os.environ, ENGINEFAB_QUIET="1")
    e.update(env or {})
    p = subprocess.run([sys.executable, "-m", "enginefab", *args], cwd=cwd, env=e, capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"enginefab {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


_APP = []  # the click command behind `enginefab`, made once


def cli(*args: str, env: dict | None = None, check: bool = False, cwd: Path = ROOT,
        timeout: float | None = None) -> subprocess.CompletedProcess:
    """`enginefab ARGS` run in this process: what `enginefab()` returns (exit code, stdout, stderr;
    an exception the CLI lets escape is in stderr as the traceback Python prints), with the same
    environment (ENGINEFAB_QUIET=1 and `env`) and working directory, without a Python start-up per
    call. For tests of what a command prints and exits with; `enginefab()` runs the real entry
    point (`python -m enginefab`) and keeps the tests of it honest. `timeout` is accepted for the
    same signature; nothing here can stop a call that hangs."""
    import traceback
    import warnings

    import typer
    from click.testing import CliRunner

    from enginefab.cli import args as cli_args
    from enginefab.cli.main import app

    if not _APP:
        _APP.append(typer.main.get_command(app))
    before = Path.cwd()
    os.chdir(cwd)
    try:
        with warnings.catch_warnings():  # the CLI routes warnings to its debug log; keep pytest's own
            r = CliRunner().invoke(_APP[0], list(args), prog_name="enginefab", env={"ENGINEFAB_QUIET": "1", **(env or {})})
    finally:
        os.chdir(before)
        cli_args.begin()  # as a new process starts
    stderr = r.stderr
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        stderr += "".join(traceback.format_exception(r.exception))
    p = subprocess.CompletedProcess(["enginefab", *args], r.exit_code, r.stdout, stderr)
    if check and p.returncode != 0:
        raise AssertionError(f"enginefab {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def session_for(root: Path = ROOT, *, downloads: Path | None = None, mirrors: Path | None = None, reporter=None):
    """A fetching session as the CLI makes one (tests stand at the edge): the shared download
    cache (or `downloads`), the mirrors of `root` (or the file `mirrors`), the environment's
    credentials; silent unless given a reporter."""
    from enginefab.core.reporter import SILENT
    from enginefab.core.settings import Settings
    from enginefab.transport.session import Session

    settings = Settings.from_env(os.environ, root=root, mirrors=mirrors)
    s = Session.of(settings, reporter or SILENT)
    if downloads is not None:
        s.downloads = downloads
    return s


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def matrix():
    from enginefab.engines.matrix import load

    return load(ROOT)


@pytest.fixture
def engines_copy(tmp_path: Path) -> Path:
    """A scratch checkout (engines/, build/, registry/) to break on purpose."""
    dst = tmp_path / "proj"
    dst.mkdir()
    for d in ("engines", "build", "registry"):
        if (ROOT / d).exists():
            shutil.copytree(ROOT / d, dst / d)
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")
    return dst


@pytest.fixture(scope="session")
def demo_aliases(matrix) -> list[str]:
    return [i.alias for i in matrix.demos]


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory, demo_aliases):
    """Both demo images built once from an empty store: {alias: digest}, store, layout."""
    base = tmp_path_factory.mktemp("demo")
    store, out = base / "store", base / "layout"
    p = enginefab("build", *demo_aliases, "--out", str(out), "--store", str(store), "--json", check=True)
    results = json.loads(p.stdout)
    return {"digests": {r["alias"]: r["digest"] for r in results}, "store": store, "layout": out, "results": results}


@pytest.fixture
def registry(tmp_path):
    from enginefab.publish.server import Registry, free_port

    r = Registry(root=tmp_path / "registry", port=free_port()).start()
    yield r
    r.stop()


SECURE_USER, SECURE_PASSWORD = "alice", "correct-horse-battery"


@pytest.fixture(scope="module")
def secure_registry(tmp_path_factory):
    """docker-registry with htpasswd (SECURE_USER / SECURE_PASSWORD, bcrypt) and TLS with a
    self-signed certificate for 127.0.0.1; `.tls[0]` is the certificate to trust (--ca-cert)."""
    from enginefab.publish.server import Registry, add_user, free_port, self_signed

    base = tmp_path_factory.mktemp("secure-registry")
    cert, key = self_signed(base / "tls")
    add_user(base / "htpasswd", SECURE_USER, SECURE_PASSWORD)
    r = Registry(root=base / "registry", port=free_port(), tls=(cert, key), htpasswd=base / "htpasswd").start()
    yield r
    r.stop()


def validate_oci(doc: dict, schema_name: str) -> None:
    """Validate a document against the official OCI JSON schema (shipped in the package)."""
    from enginefab.core import ocischema

    ocischema.validate(doc, schema_name, OCI_SCHEMAS)


class HttpMirror:
    """A directory served over HTTP on 127.0.0.1 by a thread, recording every path asked for.

    A directory answers with its `index.json` (as PEP 691 JSON under /simple/), so a directory
    tree is a PyPI-compatible index, an apt repository or a plain file mirror."""

    def __init__(self, root: Path):
        import http.server
        import threading

        self.root = root
        self.requests: list[str] = []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                path = self.path.split("?", 1)[0]
                mirror.requests.append(path)
                target = (mirror.root / path.lstrip("/")).resolve()
                if target.is_dir():
                    target = target / "index.json"
                if mirror.root.resolve() not in target.parents or not target.is_file():
                    self.send_error(404)
                    return
                data = target.read_bytes()
                self.send_response(200)
                json_type = "application/vnd.pypi.simple.v1+json" if path.startswith("/simple/") else "application/json"
                self.send_header("Content-Type", json_type if target.name == "index.json" else "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):  # quiet
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def put(self, rel: str, data: bytes) -> Path:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return p

    def asked(self, fragment: str) -> list[str]:
        return [r for r in self.requests if fragment in r]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_mirror(tmp_path):
    """An HttpMirror over tmp_path/mirror (write files into it with .put)."""
    m = HttpMirror(tmp_path / "mirror")
    (tmp_path / "mirror").mkdir(exist_ok=True)
    yield m
    m.close()


def examples(full: int, brief: int) -> list:
    """Parameters for a property-based test: `full` examples (the test as specified; marked
    integration, so the full suite runs it) and `brief` ones for the unit tier's inner loop."""
    return [pytest.param(full, marks=pytest.mark.integration, id=f"{full}-examples"),
            pytest.param(brief, id=f"{brief}-examples")]


# -- definitions for builder tests (variants of the committed demo definitions) ----------------


def demo_definition(alias: str = "demo-pytorch-aarch64"):
    """A committed definition (build/<alias>.json), parsed."""
    from enginefab.core.definition import load_definition

    return load_definition(ROOT / "build" / f"{alias}.json")


def definition_file(defn, path: Path) -> Path:
    """Write a (modified) definition where `enginefab build PATH` can build it."""
    path.write_bytes(defn.to_json())
    return path


def verified_entries(inrelease: bytes, repo_id: str = "debian-bullseye") -> dict[str, tuple[str, int]]:
    """path → (sha256, size) of a real InRelease, verified as `enginefab lock` verifies it."""
    from enginefab.engines.matrix import load
    from enginefab.lock import aptindex, aptsig

    repo = load(ROOT).platforms.apt[repo_id]
    text = aptsig.verify_signed(repo, aptindex.keyring_bytes(repo, ROOT, session_for()), inrelease,
                                what=f"{repo.label} InRelease")
    return aptindex.release_entries(text)


def pypi_file(project: str, filename: str) -> dict:
    """A real file of the PyPI index (url, sha256, size), read from its simple JSON API."""
    from enginefab.transport import download

    idx = download.get_json(f"https://pypi.org/simple/{project}/", session_for(), headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    f = next(f for f in idx["files"] if f["filename"] == filename)
    return {"url": f["url"], "sha256": f["hashes"]["sha256"], "size": f["size"], "filename": filename}


# Test tiers. `slow` and `network` are also set by hand; the hook adds what follows from a test's
# fixtures (a test that uses a built image is slow by construction, one with a server is
# integration), and `network` to every slow test (building an image downloads its wheels and debs
# from PyPI and the Debian archive unless the cache has them); everything else is `unit`:
# `./dev test --unit` is the inner loop (a unit test reaching the network fails: tests/netguard.py).
_SLOW_FIXTURES = {"demo_build"}
_INTEGRATION_FIXTURES = {"registry", "secure_registry", "http_mirror"}
_NOT_UNIT = {"slow", "network", "integration", "gpu", "npu"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & _SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("slow") and not item.get_closest_marker("network"):
            item.add_marker(pytest.mark.network)
        if used & _INTEGRATION_FIXTURES:
            item.add_marker(pytest.mark.integration)
        if not any(item.get_closest_marker(m) for m in _NOT_UNIT):
            item.add_marker(pytest.mark.unit)


_GUARD = pytest.StashKey[netguard.Guard]()


@pytest.fixture(autouse=True)
def _network_cut_for_unit_tests(request, monkeypatch):
    """A unit test that reaches past 127.0.0.1 fails (tests/netguard.py); others are left alone."""
    if request.node.get_closest_marker("unit") is not None:
        request.node.stash[_GUARD] = netguard.Guard(monkeypatch)
    yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    guard = item.stash.get(_GUARD, None)
    problem = guard.report() if guard else None
    if problem:
        pytest.fail(problem, pytrace=False)
    return result


def pytest_report_header(config):
    cut = os.environ.get("ENGINEFAB_NETWORK_CUT")
    return [f"network: {'cut for every process (' + cut + ')' if cut else 'not cut'}; "
            "unit tests fail on any non-loopback connect (tests/netguard.py)"]
