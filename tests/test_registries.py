"""`enginefab registry start|list|stop`: local registries per port, side by side, through the CLI."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import requests

from enginefab.publish.server import free_port
from tests.conftest import enginefab

pytestmark = pytest.mark.integration  # starts docker-registry servers


@pytest.fixture
def cache(tmp_path):
    """A cache of its own (the registries' state lives in it); every registry stopped afterwards."""
    env = {"ENGINEFAB_CACHE": str(tmp_path / "cache")}
    yield env
    enginefab("registry", "stop", "--all", env=env)


def _answers(host: str) -> bool:
    try:
        return requests.get(f"http://{host}/v2/", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_registries_on_two_ports_run_side_by_side_and_stop_by_port(cache):
    a, b = free_port(), free_port()
    started = {}
    for port in (a, b):
        p = enginefab("registry", "start", "--port", str(port), "--json", env=cache, check=True)
        started[port] = json.loads(p.stdout)
        assert started[port]["host"] == f"127.0.0.1:{port}" and started[port]["started"] is True
        assert _answers(f"127.0.0.1:{port}")
    assert started[a]["root"] != started[b]["root"]  # state kept per port

    again = json.loads(enginefab("registry", "start", "--port", str(a), "--json", env=cache, check=True).stdout)
    assert again["started"] is False and again["pid"] == started[a]["pid"]
    listed = json.loads(enginefab("registry", "list", "--json", env=cache, check=True).stdout)
    assert [(r["port"], r["pid"]) for r in listed] == sorted((p, started[p]["pid"]) for p in (a, b))

    two = enginefab("registry", "stop", env=cache)  # which one? the user must say
    assert two.returncode == 2 and "--port" in two.stderr and str(a) in two.stderr and str(b) in two.stderr

    enginefab("registry", "stop", "--port", str(a), env=cache, check=True)
    assert not _answers(f"127.0.0.1:{a}") and _answers(f"127.0.0.1:{b}")
    text = enginefab("registry", "list", env=cache, check=True).stdout
    assert f"127.0.0.1:{b}" in text and f"127.0.0.1:{a}" not in text

    enginefab("registry", "stop", env=cache, check=True)  # the only one left
    assert not _answers(f"127.0.0.1:{b}")
    assert json.loads(enginefab("registry", "list", "--json", env=cache, check=True).stdout) == []


def test_a_port_in_use_is_an_error_naming_who_holds_it(cache):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    holder = subprocess.Popen([sys.executable, "-c", "import socket, sys, time; s = socket.socket(); "
                               f"s.bind(('127.0.0.1', {port})); s.listen(); print('up', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "up"
        p = enginefab("registry", "start", "--port", str(port), env=cache)
        assert p.returncode == 2, p.stderr
        assert f"port {port}" in p.stderr and f"pid {holder.pid}" in p.stderr and "python" in p.stderr
        assert "Traceback" not in p.stderr
        assert json.loads(enginefab("registry", "list", "--json", env=cache, check=True).stdout) == []
    finally:
        holder.kill()
        holder.wait()
