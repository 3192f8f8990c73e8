"""The oras gaps our RegistryClient fixes, each shown against a real docker-registry: what plain
`oras.provider.Registry` (0.2.x) does, and what ours does instead. Every test fails without its fix.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import jsonschema
import oras.provider  # noqa: I001 (first: oras.decorator alone is a circular import)
import oras.decorator
import pytest
import requests

from enginefab.assemble.image import CONFIG, INDEX, MANIFEST, index_json
from enginefab.core import canonical
from enginefab.core.errors import RegistryError
from enginefab.publish.server import free_port
from enginefab.transport.client import RegistryClient
from tests.conftest import ROOT, SECURE_PASSWORD, SECURE_USER, validate_oci


@pytest.fixture
def no_oras_sleep(monkeypatch):
    """oras's retry decorator sleeps 2+3^n s between attempts: record the sleeps instead."""
    slept: list[float] = []
    monkeypatch.setattr(oras.decorator, "time", types.SimpleNamespace(sleep=slept.append))
    return slept


def random_file(path: Path, mib: int) -> tuple[str, int]:
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(mib):
            chunk = os.urandom(1 << 20)
            h.update(chunk)
            f.write(chunk)
    return "sha256:" + h.hexdigest(), mib << 20


def small_image(client: RegistryClient, repo: str) -> bytes:
    """A tiny but valid image (config + one layer) in `repo`; returns its canonical manifest bytes."""
    cfg = canonical.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
    layer = os.urandom(4096)
    client.upload_blob_bytes(repo, cfg)
    client.upload_blob_bytes(repo, layer)
    return canonical.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": canonical.digest(cfg), "size": len(cfg)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": canonical.digest(layer),
                    "size": len(layer)}],
    })


def test_manifests_keep_their_exact_bytes_where_oras_reserializes(registry):
    ours = RegistryClient(registry.host, plain_http=True)
    raw = small_image(ours, "t/m")
    doc = json.loads(raw)
    plain = oras.provider.Registry(hostname=registry.host, insecure=True)
    r = plain.upload_manifest(doc, plain.get_container(f"{registry.host}/t/m:by-oras"))
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] != canonical.digest(raw)  # oras re-serialized: another digest
    index = json.loads(index_json([{"mediaType": MANIFEST, "digest": canonical.digest(raw), "size": len(raw),
                                    "platform": {"os": "linux", "architecture": "amd64"}}]))
    validate_oci(index, "image-index-schema.json")
    with pytest.raises(jsonschema.ValidationError):  # oras validates every manifest as an image manifest
        plain.upload_manifest(index, plain.get_container(f"{registry.host}/t/m:index-by-oras"))

    assert ours.put_manifest("t/m", "ours", raw, MANIFEST) == canonical.digest(raw)
    assert ours.get_manifest_raw("t/m", "ours") == (raw, MANIFEST)
    iraw = canonical.dumps(index)
    assert ours.put_manifest("t/m", "index", iraw, INDEX) == canonical.digest(iraw)
    assert ours.get_manifest_raw("t/m", canonical.digest(iraw)) == (iraw, INDEX)


def test_a_silent_registry_times_out_where_oras_waits_forever(no_oras_sleep):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)  # the kernel completes the handshake; nobody ever answers
    host = f"127.0.0.1:{srv.getsockname()[1]}"
    done = threading.Event()

    def plain_oras():
        try:
            oras.provider.Registry(hostname=host, insecure=True).do_request(f"http://{host}/v2/", "GET")
        except Exception:
            pass
        done.set()

    try:
        threading.Thread(target=plain_oras, daemon=True).start()
        assert not done.wait(3), "plain oras should still be waiting (it sets no timeout)"
        t0 = time.monotonic()
        with pytest.raises(RegistryError, match="cannot reach"):
            RegistryClient(host, plain_http=True, timeout=1).check_login()
        assert time.monotonic() - t0 < 5
    finally:
        srv.close()  # resets the waiting connection: the oras thread ends
    assert done.wait(10)


def test_a_dead_registry_fails_in_seconds_where_oras_sleeps_minutes(no_oras_sleep):
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(requests.ConnectionError):
        oras.provider.Registry(hostname=host, insecure=True).do_request(f"http://{host}/v2/blobs/x", "HEAD")
    assert len(no_oras_sleep) == 5 and sum(no_oras_sleep) > 120  # 3+5+11+29+83 s of sleeping
    t0 = time.monotonic()
    with pytest.raises(RegistryError, match="cannot reach") as e:
        RegistryClient(host, plain_http=True).has_blob("t/x", "sha256:" + "0" * 64)
    assert time.monotonic() - t0 < 5
    assert "registry is running" in (e.value.fix or "")


def test_large_upload_over_tls_with_basic_auth(secure_registry, tmp_path, no_oras_sleep):
    """oras sends the body without credentials first: the registry answers 401 and closes the TLS
    connection mid-body. Ours learns the scheme from /v2/ and sends basic auth on every request."""
    host, ca = secure_registry.host, str(secure_registry.tls[0])
    blob = tmp_path / "blob"
    digest, size = random_file(blob, 64)
    plain = oras.provider.Registry(hostname=host, tls_verify=ca, auth_backend="basic")
    plain.auth.set_basic_auth(SECURE_USER, SECURE_PASSWORD)
    with pytest.raises(requests.RequestException):
        plain.put_upload(str(blob), plain.get_container(f"{host}/t/big:x"), {"digest": digest, "size": size})
    # oras's default (token) backend takes the htpasswd realm for a token server and gives up after its sleeps
    token = oras.provider.Registry(hostname=host, tls_verify=ca)
    token.auth.set_basic_auth(SECURE_USER, SECURE_PASSWORD)
    with pytest.raises(requests.RequestException):
        token.put_upload(str(blob), token.get_container(f"{host}/t/big:x"), {"digest": digest, "size": size})

    ours = RegistryClient(host, ca_cert=ca, credentials=(SECURE_USER, SECURE_PASSWORD))
    sent: list[tuple[str, bool]] = []
    ours.session.hooks["response"].append(
        lambda r, *a, **k: sent.append((r.request.method, "Authorization" in r.request.headers)))
    assert ours.upload_blob_file("t/big", digest, size, blob) == size
    assert ours.has_blob("t/big", digest)
    assert ("PUT", True) in sent and all(auth for m, auth in sent if m in ("PUT", "POST", "PATCH"))


def test_login_with_a_wrong_password_fails_fast_and_writes_nothing(secure_registry, tmp_path, monkeypatch):
    host, ca = secure_registry.host, str(secure_registry.tls[0])
    cfg = tmp_path / "oras-docker" / "config.json"
    plain = oras.provider.Registry(hostname=host, tls_verify=ca)
    assert plain.login(SECURE_USER, "wrong", hostname=host, config_path=str(cfg)) == {"Status": "Login Succeeded"}
    saved = json.loads(cfg.read_text())["auths"][host]["auth"]
    assert base64.b64decode(saved).decode() == f"{SECURE_USER}:wrong"  # the wrong password, stored

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "ours"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    t0 = time.monotonic()
    with pytest.raises(RegistryError, match="rejected the password for user 'alice'") as e:
        RegistryClient(host, ca_cert=ca, credentials=(SECURE_USER, "wrong")).login()
    assert time.monotonic() - t0 < 5
    assert "wrong" not in str(e.value)
    assert not (tmp_path / "ours").exists() and not (tmp_path / "home").exists()
    assert RegistryClient(host, ca_cert=ca, credentials=(SECURE_USER, SECURE_PASSWORD)).login() == {
        "Status": "Login Succeeded"}


def test_tls_is_verified_by_default(secure_registry):
    with pytest.raises(RegistryError, match="TLS verification") as e:
        RegistryClient(secure_registry.host, credentials=(SECURE_USER, SECURE_PASSWORD)).check_login()
    assert "--ca-cert" in (e.value.fix or "")


def test_downloads_are_verified_where_oras_writes_whatever_it_gets(registry, tmp_path):
    ours = RegistryClient(registry.host, plain_http=True)
    data = os.urandom(1 << 20)
    ours.upload_blob_bytes("t/d", data)
    digest = canonical.digest(data)
    stored = registry.root / "data/docker/registry/v2/blobs/sha256" / digest[7:9] / digest[7:] / "data"
    stored.write_bytes(data[:1000] + bytes([data[1000] ^ 0xFF]) + data[1001:])  # one byte flipped on disk

    plain = oras.provider.Registry(hostname=registry.host, insecure=True)
    out = plain.download_blob(f"{registry.host}/t/d", digest, str(tmp_path / "by-oras"))
    assert Path(out).read_bytes() != data  # silently wrong

    dest = tmp_path / "ours"
    with pytest.raises(RegistryError, match="refused") as e:
        ours.download_blob_to("t/d", digest, dest)
    assert "tampered" in (e.value.fix or "")
    assert not dest.exists() and not list(tmp_path.glob(".ours*"))


RSS_SCRIPT = """
import re, sys
from pathlib import Path
import oras.provider
from enginefab.transport.client import RegistryClient
def peak_kib():
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
who, host, path, digest, size = sys.argv[1:]
before = peak_kib()
if who == "oras":
    reg = oras.provider.Registry(hostname=host, insecure=True)
    r = reg.put_upload(path, reg.get_container(f"{host}/t/oras:x"), {"digest": digest, "size": int(size)})
    assert r.status_code == 201, r.status_code
else:
    assert RegistryClient(host, plain_http=True).upload_blob_file("t/ours", digest, int(size), Path(path)) == int(size)
print(before, peak_kib())
"""


def test_uploads_stream_where_oras_reads_the_blob_into_memory(registry, tmp_path):
    blob = tmp_path / "blob"
    digest, size = random_file(blob, 128)
    grew = {}
    for who in ("oras", "ours"):
        p = subprocess.run([sys.executable, "-c", RSS_SCRIPT, who, registry.host, str(blob), digest, str(size)],
                           capture_output=True, text=True, cwd=ROOT, check=True)
        before, after = map(int, p.stdout.split())
        grew[who] = (after - before) * 1024
    assert grew["oras"] > size * 0.9
    assert grew["ours"] < 32 << 20, grew


def test_pull_of_an_index_takes_every_platform_or_the_one_asked_for(registry, tmp_path):
    from enginefab.core import ocischema
    from enginefab.publish.pull import pull
    from enginefab.transport.reference import parse_reference
    from tests.conftest import OCI_SCHEMAS

    ours = RegistryClient(registry.host, plain_http=True)
    members = []
    for arch in ("amd64", "arm64"):
        raw = small_image(ours, "t/multi")
        digest = ours.put_manifest("t/multi", canonical.digest(raw), raw, MANIFEST)
        members.append({"mediaType": MANIFEST, "digest": digest, "size": len(raw),
                        "platform": {"os": "linux", "architecture": arch}})
    iraw = index_json(members)
    ours.put_manifest("t/multi", "both", iraw, INDEX)
    ref = parse_reference(f"{registry.host}/t/multi:both")

    res = pull(ours, ref, tmp_path / "all")
    assert res.digest == canonical.digest(iraw) and res.blobs == 4 and len(res.manifests) == 3
    if OCI_SCHEMAS.is_dir():
        ocischema.validate_layout(tmp_path / "all", OCI_SCHEMAS)
    res = pull(ours, ref, tmp_path / "arm", platform="linux/aarch64")
    assert res.digest == members[1]["digest"] and res.blobs == 2
    again = pull(ours, ref, tmp_path / "arm", platform="linux/arm64")
    assert again.downloaded_bytes == 0 and again.reused == 2  # re-hashed, not downloaded again
    with pytest.raises(RegistryError, match="no image for linux/s390x"):
        pull(ours, ref, tmp_path / "none", platform="linux/s390x")


def test_oras_own_push_and_pull_run_through_the_fixes(registry, tmp_path, monkeypatch):
    """RegistryClient stays an oras Registry: oras's high-level push/pull work and get our fixes
    (exact manifest bytes, streamed uploads, verified downloads)."""
    monkeypatch.chdir(tmp_path)
    Path("model.bin").write_bytes(os.urandom(2048))
    ours = RegistryClient(registry.host, plain_http=True)
    assert isinstance(ours, oras.provider.Registry)
    assert ours.push(target=f"{registry.host}/t/o:v1", files=["model.bin"]).status_code == 201
    raw, _ = ours.get_manifest_raw("t/o", "v1")
    assert raw == canonical.dumps(json.loads(raw))  # the bytes we sent, canonical
    got = ours.pull(target=f"{registry.host}/t/o:v1", outdir=str(tmp_path / "out"))
    assert Path(got[0]).read_bytes() == Path("model.bin").read_bytes()
    layer = json.loads(raw)["layers"][0]["digest"]
    stored = registry.root / "data/docker/registry/v2/blobs/sha256" / layer[7:9] / layer[7:] / "data"
    stored.write_bytes(b"x" * stored.stat().st_size)
    with pytest.raises(RegistryError, match="refused"):
        ours.pull(target=f"{registry.host}/t/o:v1", outdir=str(tmp_path / "again"))


def test_credentials_from_a_docker_credential_helper(secure_registry, tmp_path, monkeypatch):
    host, ca = secure_registry.host, str(secure_registry.tls[0])
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-enginefabtest"
    helper.write_text("#!/bin/sh\nread host\n"
                      f'[ "$host" = "{host}" ] || {{ echo "credentials not found in native keychain"; exit 1; }}\n'
                      f'echo \'{{"ServerURL":"{host}","Username":"{SECURE_USER}","Secret":"{SECURE_PASSWORD}"}}\'\n')
    helper.chmod(0o755)
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "config.json").write_text(json.dumps({"credHelpers": {host: "enginefabtest"}}))
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.delenv("ENGINEFAB_REGISTRY_USER", raising=False)
    monkeypatch.delenv("ENGINEFAB_REGISTRY_PASSWORD", raising=False)
    client = RegistryClient(host, ca_cert=ca)
    assert client.credentials == (SECURE_USER, SECURE_PASSWORD)
    client.check_login()
    assert RegistryClient("127.0.0.1:1", ca_cert=ca).credentials is None  # the helper knows nothing of it
