"""Registry and download I/O stays bounded when the other side misbehaves (issue 11, items 5, 6, 8,
9 and 15): an endless blob, a server that never answers or stops mid-body, 500s, a registry
stopped with SIGSTOP in the middle of an upload, a truncated store blob, credentials in an
address. Each test asserts the words a user reads and that the error comes in bounded time
(generous bounds here; bench/faults.py measures the real numbers with the default settings).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from enginefab.assemble.store import Store
from enginefab.core.errors import FetchError, RegistryError
from enginefab.publish.push import store_blobs
from enginefab.publish.server import Registry, free_port
from enginefab.transport import download
from enginefab.transport.client import RegistryClient
from enginefab.transport.errors import ShortBody
from enginefab.transport.http import Body, Http
from enginefab.transport.options import HttpOptions
from tests import hostile_http as hostile
from tests.conftest import ROOT, enginefab, session_for

pytestmark = pytest.mark.integration  # real servers that stall, hang or stream on purpose: seconds each

QUICK = HttpOptions(deadline=2, stall_timeout=2)


def parts(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".part")]


def pull_json(ref: str, out: Path, **env) -> tuple[int, dict, float]:
    t0 = time.monotonic()
    p = enginefab("pull", ref, "--out", str(out), "--plain-http", "--json", env=env, timeout=120)
    return p.returncode, json.loads(p.stdout), time.monotonic() - t0


def test_an_endless_blob_stops_at_its_descriptor_size_and_leaves_nothing(tmp_path):
    with hostile.HostileServer(hostile.registry(hostile.endless, layer_size=10)) as srv:
        rc, err, took = pull_json(f"{srv.host}/t/x:v1", tmp_path / "out")
    assert rc == 2 and took < 60
    assert f"{srv.host} sent more than the 10 bytes expected for blob sha256:abababababab… of t/x" in err["error"]
    assert "nothing of it was kept" in err["fix"]
    blobs = tmp_path / "out" / "blobs" / "sha256"
    assert not (blobs / ("ab" * 32)).exists() and not parts(tmp_path)


def test_a_blob_announced_larger_than_its_descriptor_is_refused_before_reading(tmp_path):
    def huge(req, conn, srv):
        hostile.respond(conn, 200, b"", {"Content-Length": str(1 << 40)})

    with hostile.HostileServer(hostile.registry(huge, layer_size=10)) as srv:
        client = RegistryClient(srv.host, plain_http=True)
        with pytest.raises(RegistryError, match=f"{srv.host} announced 1099511627776 bytes for blob "
                                                "sha256:abababababab… of t/x, more than the 10 expected"):
            client.download_blob_to("t/x", "sha256:" + "ab" * 32, tmp_path / "blob", size=10)
    assert not list(tmp_path.iterdir())


def test_a_head_is_not_read_as_a_body_whatever_its_content_length():
    def big(req, conn, srv):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1099511627776\r\n\r\n")  # HEAD: headers only

    with hostile.HostileServer(hostile.registry(big)) as srv:
        assert RegistryClient(srv.host, plain_http=True).has_blob("t/x", "sha256:" + "ab" * 32)


def test_a_body_that_stops_moving_ends_on_the_stall_timeout(tmp_path):
    with hostile.HostileServer(hostile.registry(hostile.stall_after(1000, 5000), layer_size=5000)) as srv:
        client = RegistryClient(srv.host, plain_http=True, options=QUICK)
        t0 = time.monotonic()
        with pytest.raises(RegistryError) as e:
            client.download_blob_to("t/x", "sha256:" + "ab" * 32, tmp_path / "blob", size=5000)
        took = time.monotonic() - t0
    assert f"{srv.host} stopped sending blob sha256:abababababab… of t/x: no progress for 2 s while receiving" \
        in e.value.message
    assert "GET http://" in e.value.message  # what it was waiting for
    assert 1.5 < took < 20 and not list(tmp_path.iterdir())
    # a download by URL: the same stack, the same bound
    with hostile.HostileServer(hostile.stall_after(1000, 5000)) as srv:
        with pytest.raises(FetchError, match="stopped sending wheel: no progress for 2 s") as e:
            download.fetch(download.Want(url=f"{srv.url}/f.whl", sha256="0" * 64, size=5000, label="wheel"),
                           session_for(downloads=tmp_path / "cache"), http=Http(QUICK))
    assert e.value.input == "wheel" and not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_a_server_that_never_answers_fails_within_the_default_deadline(tmp_path):
    with hostile.HostileServer(hostile.silent) as srv:
        rc, err, took = pull_json(f"{srv.host}/t/x:v1", tmp_path / "out")
    assert rc == 2 and took < 60, took
    assert f"{srv.host} gave no answer within 20 s to the API root of {srv.host}" in err["error"]
    assert f"waiting for the answer to GET http://{srv.host}/v2/" in err["error"]
    assert "cannot reach" not in err["error"]


def test_http_500_says_what_the_registry_answered_and_is_retried_few_times(tmp_path):
    with hostile.HostileServer(hostile.status(500)) as srv:
        rc, err, took = pull_json(f"{srv.host}/t/x:v1", tmp_path / "out")
        assert len(srv.seen) == 3  # GET /v2/: the first attempt and 2 retries
    assert rc == 2 and took < 30
    assert f"HTTP 500 from {srv.host} (UNKNOWN: storage backend on fire)" in err["error"]
    assert "cannot reach" not in err["error"] and "see its log" in err["fix"]
    # a write is never repeated: one PUT, one error
    with hostile.HostileServer(hostile.status(500)) as srv:
        client = RegistryClient(srv.host, plain_http=True)
        client.scheme = "none"  # as if /v2/ had answered 200
        with pytest.raises(RegistryError, match=f"manifest t/x:v1: HTTP 500 from {srv.host}"):
            client.put_manifest("t/x", "v1", b"{}", hostile.MANIFEST)
        assert [r.method for r in srv.seen] == ["PUT"]


def test_a_retry_after_is_capped(tmp_path):
    def busy(req, conn, srv):
        hostile.respond(conn, 503, b"", {"Retry-After": "3600"})

    with hostile.HostileServer(busy) as srv:
        t0 = time.monotonic()
        with pytest.raises(FetchError, match=f"HTTP 503 from {srv.host}"):
            download.get_json(f"{srv.url}/simple/x/", session_for(), label="x")
        assert time.monotonic() - t0 < 10 and len(srv.seen) == 3


def _random_file(path: Path, mib: int) -> tuple[str, int]:
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(mib):
            chunk = os.urandom(1 << 20)
            h.update(chunk)
            f.write(chunk)
    return "sha256:" + h.hexdigest(), mib << 20


def test_a_registry_stopped_mid_upload_fails_on_the_stall_timeout(tmp_path):
    """SIGSTOP the registry while a 256 MiB blob streams to it: the upload ends on the default
    stall timeout (10 s), naming the registry, the blob and that it was sending."""
    blob = tmp_path / "blob"
    digest, size = _random_file(blob, 256)
    reg = Registry(root=tmp_path / "registry", port=free_port()).start()
    try:
        client = RegistryClient(reg.host, plain_http=True)
        sent = [0]
        started = threading.Event()

        def progress(n: int) -> None:
            sent[0] += n
            if sent[0] > 32 << 20:
                started.set()

        stopped_at: list[float] = []

        def stop_when_streaming() -> None:
            started.wait(60)
            os.kill(reg.proc.pid, signal.SIGSTOP)
            stopped_at.append(time.monotonic())

        threading.Thread(target=stop_when_streaming, daemon=True).start()
        with pytest.raises(RegistryError) as e:
            client.upload_blob_file("t/big", digest, size, blob, progress=progress)
        took = time.monotonic() - stopped_at[0]
    finally:
        if reg.proc:
            os.kill(reg.proc.pid, signal.SIGCONT)
        reg.stop()
    assert f"{reg.host} stopped taking blob {digest[:19]}… to t/big: no progress for 10 s while sending" \
        in e.value.message, e.value.message
    assert "stuck or overloaded" in (e.value.fix or "")
    assert 5 < took < 60, took


def test_a_truncated_store_blob_is_refused_before_anything_is_sent(tmp_path):
    store = Store(tmp_path / "store")
    blob = store.put_bytes(os.urandom(4096))
    path = store.blob_path(blob.digest)
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:1000])  # truncated on disk
    with pytest.raises(RegistryError, match=f"blob {blob.digest} is 1000 bytes in the store .*, its descriptor "
                                            "says 4096: the store is damaged, nothing was pushed") as e:
        store_blobs(store, [{"digest": blob.digest, "size": 4096}])
    assert "store verify" in (e.value.fix or "")
    with hostile.HostileServer(hostile.silent) as srv:  # the client refuses too, without asking anything
        t0 = time.monotonic()
        with pytest.raises(RegistryError, match="is 1000 bytes .*its descriptor says 4096: not uploaded"):
            RegistryClient(srv.host, plain_http=True).upload_blob_file("t/x", blob.digest, 4096, path)
        assert time.monotonic() - t0 < 1 and srv.seen == []


def test_an_upload_whose_file_ends_early_stops_at_once(tmp_path):
    """A file that shrinks under an upload would leave the server waiting for the bytes its
    Content-Length promised: the body raises instead, and nothing waits."""
    f = tmp_path / "short"
    f.write_bytes(b"x" * 1000)
    with hostile.HostileServer(hostile.status(201)) as srv, open(f, "rb") as fh:
        t0 = time.monotonic()
        with pytest.raises(ShortBody, match="blob b ended after 1000 of its 5000 bytes: not sent"):
            Http(QUICK).send("PUT", f"{srv.url}/v2/t/blobs/uploads/1", what="blob b",
                             data=Body(fh, 5000, what="blob b"), headers={"Content-Length": "5000"})
        assert time.monotonic() - t0 < 1.5


def test_credentials_in_an_address_are_refused_and_never_shown(tmp_path, engines_copy):
    secret = "hunter2-in-the-url"
    cache = tmp_path / "cache"
    env = {"ENGINEFAB_CACHE": str(cache), "ENGINEFAB_ROOT": str(engines_copy)}
    port = free_port()
    for args in (["push", "demo-pytorch-aarch64", "--to", f"alice:{secret}@127.0.0.1:{port}/team"],
                 ["push", "demo-pytorch-aarch64", "--to", f"alice:{secret}@127.0.0.1:{port}/team", "--json"],
                 ["pull", f"alice:{secret}@127.0.0.1:{port}/team/pytorch:v1", "--out", str(tmp_path / "o")],
                 ["referrers", f"alice:{secret}@127.0.0.1:{port}/team/pytorch:v1"]):
        p = enginefab(*args, env=env, timeout=120)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert "holds credentials" in p.stdout + p.stderr and "ENGINEFAB_REGISTRY_PASSWORD" in p.stdout + p.stderr
        assert secret not in p.stdout + p.stderr and "alice" not in p.stdout + p.stderr
    assert not [p for p in cache.rglob("*") if secret in p.name or "alice" in p.name]
    (engines_copy / "registry" / "targets.toml").write_text(
        f'[targets.leaky]\nregistry = "alice:{secret}@127.0.0.1:{port}"\n')
    p = enginefab("push", "demo-pytorch-aarch64", "--to", "leaky", env=env, timeout=120)
    assert p.returncode == 2 and "holds credentials" in p.stderr and secret not in p.stdout + p.stderr


PULL_AND_WAIT = """
import sys
from pathlib import Path
from enginefab.publish.pull import pull
from enginefab.transport.client import RegistryClient
from enginefab.transport.reference import parse_reference
host, out = sys.argv[1:]
pull(RegistryClient(host, plain_http=True), parse_reference(f"{host}/t/x:v1"), Path(out))
"""


def test_a_killed_pull_leaves_no_partial_file_and_old_ones_are_swept(tmp_path):
    out = tmp_path / "out"
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = blobs / f".{'cd' * 32}.{int(gone.stdout)}.part"  # what a killed pull of an older release left
    stale.write_bytes(b"half")
    with hostile.HostileServer(hostile.registry(hostile.stall_after(1 << 20, 4 << 20), layer_size=4 << 20)) as srv:
        proc = subprocess.Popen([sys.executable, "-c", PULL_AND_WAIT, srv.host, str(out)], cwd=ROOT)
        try:
            deadline = time.monotonic() + 60
            while srv.sent_bytes < 1 << 20 or not any(r.path.endswith("ab" * 32) for r in srv.seen):
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            time.sleep(0.5)  # the first MiB is being written
            proc.kill()
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert not stale.exists()  # swept: its process is gone
    assert parts(out) == [] and not (blobs / ("ab" * 32)).exists()


def test_the_first_failed_upload_stops_the_others_at_once(tmp_path):
    """Four uploads in parallel: one gets a 500, another waits for an answer that never comes. The
    push ends with the 500 in about a second, not when the other's deadline runs out."""
    from enginefab.publish.push import BlobHome, PushStats, push_blobs

    blobs = []
    for name in ("fails", "hangs"):
        data = name.encode() * 1000
        path = tmp_path / name
        path.write_bytes(data)
        blobs.append(("sha256:" + hashlib.sha256(data).hexdigest(), len(data), path))
    failing = blobs[0][0]

    def registry(req, conn, srv):
        if req.method == "HEAD" or req.path.startswith("/v2/_catalog"):
            hostile.respond(conn, 404)
        elif req.method == "POST":
            hostile.respond(conn, 202, b"", {"Location": f"/v2/t/x/blobs/uploads/{len(srv.seen)}"})
        elif failing in req.path:
            hostile.status(500)(req, conn, srv)
        else:
            hostile.silent(req, conn, srv)

    with hostile.HostileServer(registry) as srv:
        client = RegistryClient(srv.host, plain_http=True)
        client.scheme = "none"
        t0 = time.monotonic()
        with pytest.raises(RegistryError, match=f"HTTP 500 from {srv.host}"):
            push_blobs(client, "t/x", blobs, PushStats(), BlobHome(None), parallel=4)
        assert time.monotonic() - t0 < 5
        assert not client.cancel.is_set()  # the client is usable again
