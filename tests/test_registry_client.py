"""Our registry client against a real docker-registry: exact manifest bytes, bounded failures,
authentication up front, verified downloads, streamed uploads, credential helpers. (What plain
oras 0.2.x does on the same points is demonstrated in docs/oras-gaps/, outside this suite.)
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enginefab.assemble.image import CONFIG, INDEX, MANIFEST, index_json
from enginefab.core import canonical
from enginefab.core.errors import RegistryError
from enginefab.publish.server import free_port
from enginefab.transport.client import RegistryClient
from enginefab.transport.options import HttpOptions
from tests.conftest import ROOT, SECURE_PASSWORD, SECURE_USER, validate_oci


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


def test_manifests_keep_their_exact_bytes_and_indexes_are_accepted(registry):
    ours = RegistryClient(registry.host, plain_http=True)
    raw = small_image(ours, "t/m")
    index = json.loads(index_json([{"mediaType": MANIFEST, "digest": canonical.digest(raw), "size": len(raw),
                                    "platform": {"os": "linux", "architecture": "amd64"}}]))
    validate_oci(index, "image-index-schema.json")
    assert ours.put_manifest("t/m", "ours", raw, MANIFEST) == canonical.digest(raw)
    assert ours.get_manifest_raw("t/m", "ours") == (raw, MANIFEST)
    iraw = canonical.dumps(index)
    assert ours.put_manifest("t/m", "index", iraw, INDEX) == canonical.digest(iraw)
    assert ours.get_manifest_raw("t/m", canonical.digest(iraw)) == (iraw, INDEX)


def test_a_silent_registry_fails_within_the_deadline():
    srv = socket.create_server(("127.0.0.1", 0))  # the kernel completes the handshake; nobody ever answers
    host = f"127.0.0.1:{srv.getsockname()[1]}"
    try:
        t0 = time.monotonic()
        with pytest.raises(RegistryError, match=f"{host} gave no answer within 2 s to the API root") as e:
            RegistryClient(host, plain_http=True, options=HttpOptions(deadline=2)).check_login()
        assert time.monotonic() - t0 < 6
        assert "stuck or overloaded" in (e.value.fix or "")
    finally:
        srv.close()


def test_a_dead_registry_fails_in_seconds():
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(RegistryError, match=f"cannot reach {host}: Connection refused") as e:
        RegistryClient(host, plain_http=True).has_blob("t/x", "sha256:" + "0" * 64)
    assert time.monotonic() - t0 < 5  # 2 retries, ≤ 1 s apart
    assert "registry is running" in (e.value.fix or "")


def test_large_upload_over_tls_with_basic_auth(secure_registry, tmp_path):
    """The scheme is learned from /v2/ first and basic auth goes on every request, so a 64 MiB
    body is sent once, with credentials (sent without, the registry answers 401 and closes the
    TLS connection mid-body: what plain oras does, docs/oras-gaps/)."""
    host, ca = secure_registry.host, str(secure_registry.tls[0])
    blob = tmp_path / "blob"
    digest, size = random_file(blob, 64)
    ours = RegistryClient(host, ca_cert=ca, credentials=(SECURE_USER, SECURE_PASSWORD))
    sent: list[tuple[str, bool]] = []
    ours.http.session.hooks["response"].append(
        lambda r, *a, **k: sent.append((r.request.method, "Authorization" in r.request.headers)))
    assert ours.upload_blob_file("t/big", digest, size, blob) == size
    assert ours.has_blob("t/big", digest)
    assert ("PUT", True) in sent and all(auth for m, auth in sent if m in ("PUT", "POST", "PATCH"))


def test_login_with_a_wrong_password_fails_fast_and_writes_nothing(secure_registry, tmp_path, monkeypatch):
    host, ca = secure_registry.host, str(secure_registry.tls[0])
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "ours"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    t0 = time.monotonic()
    with pytest.raises(RegistryError, match="rejected the password for user 'alice'") as e:
        RegistryClient(host, ca_cert=ca, credentials=(SECURE_USER, "wrong")).check_login()
    assert time.monotonic() - t0 < 5
    assert "wrong" not in str(e.value)
    RegistryClient(host, ca_cert=ca, credentials=(SECURE_USER, SECURE_PASSWORD)).check_login()
    assert not (tmp_path / "ours").exists() and not (tmp_path / "home").exists()


def test_tls_is_verified_by_default(secure_registry):
    with pytest.raises(RegistryError, match="TLS verification") as e:
        RegistryClient(secure_registry.host, credentials=(SECURE_USER, SECURE_PASSWORD)).check_login()
    assert "--ca-cert" in (e.value.fix or "")


def test_a_plain_http_registry_is_named_as_such_not_as_a_certificate_problem(registry):
    with pytest.raises(RegistryError, match=f"{registry.host} speaks plain HTTP, not HTTPS") as e:
        RegistryClient(registry.host).check_login()
    assert "--plain-http" in (e.value.fix or "") and "--ca-cert" not in (e.value.fix or "")


def test_downloads_are_verified(registry, tmp_path):
    ours = RegistryClient(registry.host, plain_http=True)
    data = os.urandom(1 << 20)
    ours.upload_blob_bytes("t/d", data)
    digest = canonical.digest(data)
    assert ours.get_blob_bytes("t/d", digest) == data  # size unknown: capped, not required
    assert ours.get_blob_bytes("t/d", digest, size=len(data)) == data
    with pytest.raises(RegistryError, match="more than the 1000 expected"):
        ours.get_blob_bytes("t/d", digest, size=1000)
    stored = registry.root / "data/docker/registry/v2/blobs/sha256" / digest[7:9] / digest[7:] / "data"
    stored.write_bytes(data[:1000] + bytes([data[1000] ^ 0xFF]) + data[1001:])  # one byte flipped on disk
    dest = tmp_path / "ours"
    with pytest.raises(RegistryError, match="refused") as e:
        ours.download_blob_to("t/d", digest, dest)
    assert "tampered" in (e.value.fix or "")
    assert not dest.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


RSS_SCRIPT = """
import re, sys
from pathlib import Path
from enginefab.transport.client import RegistryClient
def peak_kib():
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
host, path, digest, size = sys.argv[1:]
before = peak_kib()
assert RegistryClient(host, plain_http=True).upload_blob_file("t/ours", digest, int(size), Path(path)) == int(size)
print(before, peak_kib())
"""


def test_uploads_stream_in_flat_memory(registry, tmp_path):
    blob = tmp_path / "blob"
    digest, size = random_file(blob, 128)
    p = subprocess.run([sys.executable, "-c", RSS_SCRIPT, registry.host, str(blob), digest, str(size)],
                       capture_output=True, text=True, cwd=ROOT, check=True)
    before, after = map(int, p.stdout.split())
    assert (after - before) * 1024 < 32 << 20, (before, after)  # the blob is 128 MiB


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
    ocischema.validate_layout(tmp_path / "all", OCI_SCHEMAS)
    res = pull(ours, ref, tmp_path / "arm", platform="linux/aarch64")
    assert res.digest == members[1]["digest"] and res.blobs == 2
    again = pull(ours, ref, tmp_path / "arm", platform="linux/arm64")
    assert again.downloaded_bytes == 0 and again.reused == 2  # re-hashed, not downloaded again
    with pytest.raises(RegistryError, match="no image for linux/s390x"):
        pull(ours, ref, tmp_path / "none", platform="linux/s390x")


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
    client = RegistryClient(host, ca_cert=ca, env=os.environ)  # the environment the edge passes in
    assert client.credentials == (SECURE_USER, SECURE_PASSWORD)
    client.check_login()
    assert RegistryClient("127.0.0.1:1", ca_cert=ca, env=os.environ).credentials is None  # the helper knows nothing of it
