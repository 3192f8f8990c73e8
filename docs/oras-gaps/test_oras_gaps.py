"""Plain oras 0.2.x, shown where it falls short (docs/oras-gaps/README.md). Not the product's tests:
each test passes while oras still has the gap, and fails the day oras closes it."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import types
from pathlib import Path

import jsonschema
import oras.provider  # noqa: I001 (first: oras.decorator alone is a circular import)
import oras.container
import oras.decorator
import pytest
import requests
from oras.auth.utils import parse_auth_header

from enginefab.assemble.image import CONFIG, MANIFEST, index_json
from enginefab.core import canonical
from enginefab.publish.server import free_port
from enginefab.transport.client import RegistryClient
from tests.conftest import ROOT, SECURE_PASSWORD, SECURE_USER


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


def test_oras_reserializes_manifests_and_refuses_indexes(registry):
    plain = oras.provider.Registry(hostname=registry.host, insecure=True)
    cfg = canonical.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
    for blob in (cfg, b"layer"):
        RegistryClient(registry.host, plain_http=True).upload_blob_bytes("t/m", blob)
    raw = canonical.dumps({"schemaVersion": 2, "mediaType": MANIFEST,
                           "config": {"mediaType": CONFIG, "digest": canonical.digest(cfg), "size": len(cfg)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                       "digest": canonical.digest(b"layer"), "size": 5}]})
    r = plain.upload_manifest(json.loads(raw), plain.get_container(f"{registry.host}/t/m:by-oras"))
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] != canonical.digest(raw)  # re-serialized: another digest
    index = json.loads(index_json([{"mediaType": MANIFEST, "digest": canonical.digest(raw), "size": len(raw),
                                    "platform": {"os": "linux", "architecture": "amd64"}}]))
    with pytest.raises(jsonschema.ValidationError):  # every manifest validated as an image manifest
        plain.upload_manifest(index, plain.get_container(f"{registry.host}/t/m:index-by-oras"))


def test_oras_waits_forever_on_a_silent_registry(no_oras_sleep):
    srv = socket.create_server(("127.0.0.1", 0))  # the kernel completes the handshake; nobody answers
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
        assert not done.wait(5), "plain oras should still be waiting (it sets no timeout)"
    finally:
        srv.close()  # resets the waiting connection: oras retries (its sleeps recorded), then ends
    assert done.wait(10)


def test_oras_sleeps_minutes_on_a_dead_registry(no_oras_sleep):
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(requests.ConnectionError):
        oras.provider.Registry(hostname=host, insecure=True).do_request(f"http://{host}/v2/blobs/x", "HEAD")
    assert len(no_oras_sleep) == 5 and sum(no_oras_sleep) > 120  # 3+5+11+29+83 s of sleeping


def test_oras_fails_a_large_upload_over_tls_with_basic_auth(secure_registry, tmp_path, no_oras_sleep):
    """oras sends the body without credentials first: the registry answers 401 and closes the TLS
    connection mid-body."""
    host, ca = secure_registry.host, str(secure_registry.tls[0])
    blob = tmp_path / "blob"
    digest, size = random_file(blob, 64)
    plain = oras.provider.Registry(hostname=host, tls_verify=ca, auth_backend="basic")
    plain.auth.set_basic_auth(SECURE_USER, SECURE_PASSWORD)
    with pytest.raises(requests.RequestException):
        plain.put_upload(str(blob), plain.get_container(f"{host}/t/big:x"), {"digest": digest, "size": size})
    # the default (token) backend takes the htpasswd realm for a token server and gives up after its sleeps
    token = oras.provider.Registry(hostname=host, tls_verify=ca)
    token.auth.set_basic_auth(SECURE_USER, SECURE_PASSWORD)
    with pytest.raises(requests.RequestException):
        token.put_upload(str(blob), token.get_container(f"{host}/t/big:x"), {"digest": digest, "size": size})


def test_oras_login_accepts_a_wrong_password_and_stores_it(secure_registry, tmp_path):
    host, ca = secure_registry.host, str(secure_registry.tls[0])
    cfg = tmp_path / "oras-docker" / "config.json"
    plain = oras.provider.Registry(hostname=host, tls_verify=ca)
    assert plain.login(SECURE_USER, "wrong", hostname=host, config_path=str(cfg)) == {"Status": "Login Succeeded"}
    saved = json.loads(cfg.read_text())["auths"][host]["auth"]
    assert base64.b64decode(saved).decode() == f"{SECURE_USER}:wrong"


def test_oras_writes_a_tampered_blob(registry, tmp_path):
    data = os.urandom(1 << 20)
    digest = canonical.digest(data)
    RegistryClient(registry.host, plain_http=True).upload_blob_bytes("t/d", data)
    stored = registry.root / "data/docker/registry/v2/blobs/sha256" / digest[7:9] / digest[7:] / "data"
    stored.write_bytes(data[:1000] + bytes([data[1000] ^ 0xFF]) + data[1001:])  # one byte flipped on disk
    plain = oras.provider.Registry(hostname=registry.host, insecure=True)
    out = plain.download_blob(f"{registry.host}/t/d", digest, str(tmp_path / "by-oras"))
    assert Path(out).read_bytes() != data  # silently wrong


RSS_SCRIPT = """
import re, sys
import oras.provider
def peak_kib():
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
host, path, digest, size = sys.argv[1:]
before = peak_kib()
reg = oras.provider.Registry(hostname=host, insecure=True)
r = reg.put_upload(path, reg.get_container(f"{host}/t/oras:x"), {"digest": digest, "size": int(size)})
assert r.status_code == 201, r.status_code
print(before, peak_kib())
"""


def test_oras_reads_an_upload_into_memory(registry, tmp_path):
    blob = tmp_path / "blob"
    digest, size = random_file(blob, 128)
    p = subprocess.run([sys.executable, "-c", RSS_SCRIPT, registry.host, str(blob), digest, str(size)],
                       capture_output=True, text=True, cwd=ROOT, check=True)
    before, after = map(int, p.stdout.split())
    assert (after - before) * 1024 > size * 0.9


def test_oras_parses_userinfo_as_a_docker_hub_reference():
    c = oras.container.Container("alice:hunter2@127.0.0.1:5000/team/app:v1")
    assert c.registry == "docker.io"  # not 127.0.0.1:5000
    assert (c.repository, c.tag) == ("alice", "hunter2")  # the password, as a tag


def test_oras_misreads_unquoted_and_escaped_challenge_parameters():
    h = parse_auth_header('Bearer realm=https://auth.example/token,service=registry.example')
    assert (h.realm, h.service) == (None, None)  # RFC 7235 allows token values without quotes
    h = parse_auth_header('Bearer realm="https://auth.example/token",service="reg \\"one\\""')
    assert h.service == "reg \\"  # cut at the escaped quote
