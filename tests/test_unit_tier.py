"""The unit tier's promise: no network. `./dev test --unit` runs it in a network namespace of its own
(tests/offline.py), and a unit test that reaches past 127.0.0.1 fails, loudly and at once
(tests/netguard.py), even where the code under test catches the error."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time

from tests.conftest import ROOT, cli, enginefab

PROBE = r"""
import json, os, socket, time
out = {"uid": os.getuid(), "gid": os.getgid(), "cut": os.environ.get("ENGINEFAB_NETWORK_CUT")}
t = time.monotonic()
try:
    socket.create_connection(("192.0.2.1", 443), timeout=30)
    out["far"] = "connected"
except OSError as e:
    out["far"] = e.errno
out["far_seconds"] = time.monotonic() - t
try:
    socket.getaddrinfo("pypi.org", 443)
    out["dns"] = "resolved"
except OSError as e:
    out["dns"] = type(e).__name__
srv = socket.create_server(("127.0.0.1", 0))
socket.create_connection(srv.getsockname(), timeout=5).sendall(b"x")
out["loopback"] = srv.accept()[0].recv(1).decode()
print(json.dumps(out))
"""


def test_offline_cuts_the_network_of_the_command_and_keeps_loopback_and_the_user():
    p = subprocess.run([sys.executable, str(ROOT / "tests" / "offline.py"), sys.executable, "-c", PROBE],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["cut"] == "namespace", p.stderr
    assert out["far"] == errno.ENETUNREACH and out["far_seconds"] < 2  # refused at once, not a timeout
    assert out["dns"] == "gaierror"
    assert out["loopback"] == "x"
    assert (out["uid"], out["gid"]) == (os.getuid(), os.getgid())  # no fake root: permissions as outside


NESTED_TESTS = r"""
import socket
import urllib.request

import pytest


def test_swallows_a_download_error():
    try:
        urllib.request.urlopen("https://pypi.org/simple/", timeout=30)
    except OSError:
        pass


def test_swallows_a_connect_error():
    try:
        socket.create_connection(("192.0.2.1", 443), timeout=30)
    except OSError:
        pass


def test_loopback_is_fine():
    srv = socket.create_server(("127.0.0.1", 0))
    socket.create_connection(srv.getsockname(), timeout=5).close()


@pytest.mark.network
def test_a_network_test_is_left_alone():
    assert socket.getaddrinfo.__module__ == "socket"
"""


def test_a_unit_test_reaching_past_loopback_fails_naming_the_address_even_if_the_error_was_caught(tmp_path):
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import (_network_cut_for_unit_tests, pytest_collection_modifyitems,  # noqa: F401\n"
        "                            pytest_runtest_call)\n")
    (tmp_path / "test_nested.py").write_text(NESTED_TESTS)
    t = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-W",
                        "ignore::pytest.PytestUnknownMarkWarning", str(tmp_path)],
                       cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                       timeout=120)
    assert time.monotonic() - t < 60
    out = p.stdout
    assert p.returncode == 1, out + p.stderr
    assert "2 failed, 2 passed" in out, out
    assert "FAILED test_nested.py::test_swallows_a_download_error" in out
    assert "resolve pypi.org:443" in out
    assert "FAILED test_nested.py::test_swallows_a_connect_error" in out
    assert "connect 192.0.2.1:443" in out
    assert "PASSED test_nested.py::test_loopback_is_fine" in out
    assert "PASSED test_nested.py::test_a_network_test_is_left_alone" in out


def test_the_cli_in_process_answers_as_the_entry_point_does(engines_copy):
    """`cli()` (the unit tier's way to run a command) gives what `python -m enginefab` gives:
    exit code, stdout and stderr, for a success and for a refusal (a definition that is not JSON)."""
    (engines_copy / "build" / "demo-pytorch-aarch64.json").write_text("{not json")
    env = {"ENGINEFAB_ROOT": str(engines_copy)}
    for args, code in ((("list", "--json"), 0), (("lock", "--check"), 2)):
        real, here = enginefab(*args, env=env, cwd=engines_copy), cli(*args, env=env, cwd=engines_copy)
        assert real.returncode == code, real.stderr
        assert (here.returncode, here.stdout, here.stderr) == (real.returncode, real.stdout, real.stderr), args


def test_an_exception_the_cli_lets_escape_reads_as_a_traceback(monkeypatch):
    from enginefab.engines import matrix

    def boom(*a, **kw):
        raise RuntimeError("boom")

    monkeypatch.setattr(matrix, "load", boom)
    p = cli("list")
    assert p.returncode == 1
    assert "Traceback (most recent call last)" in p.stderr and "RuntimeError: boom" in p.stderr
