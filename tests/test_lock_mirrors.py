"""Mirrors: one config (registry/mirrors.toml or $ENGINEFAB_MIRRORS) honoured by every resolver and
fetcher — the PyPI index (uv and the lock), URL prefixes (PyPI files, the Debian archive) and
registries — with upstream cut off, and a lock made through mirrors is byte-identical to the
committed one (the lock records upstream URLs)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from enginefab.publish.server import free_port as closed_port  # released at once: nothing listens
from tests.conftest import ROOT, enginefab, session_for, verified_entries

DEBIAN = "https://deb.debian.org/debian"
FILES = "https://files.pythonhosted.org/"
ALIAS = "demo-pytorch-aarch64"  # its wheels are all under 50 MB


def _upstream_only_through(mirror_url: str) -> dict[str, str]:
    """Environment that sends every non-loopback request to a closed port (so nothing reaches
    upstream except through the mirror), for requests and for uv alike."""
    dead = f"http://127.0.0.1:{closed_port()}"
    env = {k: dead for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")}
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    return env


def _wheel_metadata(inp: dict) -> bytes:
    from enginefab.transport import download

    path = download.fetch(download.Want(url=inp["url"], sha256=inp["sha256"], size=inp["size"], label=inp["name"]),
                          session_for())
    with zipfile.ZipFile(path) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1]
        return z.read(name)


@pytest.fixture
def mirrored_checkout(engines_copy, http_mirror):
    """engines_copy whose registry/mirrors.toml points PyPI and Debian at http_mirror, filled with
    the real index pages (PyPI JSON, InRelease, Packages.xz) and the METADATA of the wheels the
    demo locks (PEP 658), taken from upstream once."""
    from enginefab.transport import download
    from enginefab.core.definition import load_definition

    defn = load_definition(ROOT / "build" / f"{ALIAS}.json")
    session = session_for()
    wheels = {i.name: i.model_dump(mode="json") for i in defn.inputs() if i.kind == "wheel"}
    for name, inp in wheels.items():
        page = download.get_json(f"https://pypi.org/simple/{name}/", session, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        for f in page["files"]:
            f.pop("core-metadata", None), f.pop("data-dist-info-metadata", None)
            assert f["url"].startswith(FILES)
            f["url"] = f"{http_mirror.url}/files/{f['url'][len(FILES):]}"
            if f["filename"] == inp["filename"]:
                meta = _wheel_metadata(inp)
                http_mirror.put(f"files/{inp['url'][len(FILES):]}.metadata", meta)
                f["core-metadata"] = {"sha256": hashlib.sha256(meta).hexdigest()}
        http_mirror.put(f"simple/{name}/index.json", json.dumps(page).encode())
    inrelease = download.get_bytes(f"{DEBIAN}/dists/bullseye/InRelease", session)
    entries = verified_entries(inrelease)
    http_mirror.put("debian/dists/bullseye/InRelease", inrelease)
    rel = "main/binary-arm64/Packages.xz"
    sha, size = entries[rel]
    http_mirror.put(f"debian/dists/bullseye/{rel}", download.fetch(download.Want(url=f"{DEBIAN}/dists/bullseye/{rel}",
                                                                          sha256=sha, size=size), session).read_bytes())
    mirrors = engines_copy / "registry" / "mirrors.toml"
    mirrors.write_text(f'[pypi]\nindex = "{http_mirror.url}/simple"\n\n'
                       f'[[rewrite]]\nfrom = "{FILES}"\nto = "{http_mirror.url}/files/"\n\n'
                       f'[[rewrite]]\nfrom = "{DEBIAN}/"\nto = "{http_mirror.url}/debian/"\n')
    return {"root": engines_copy, "mirror": http_mirror, "mirrors": mirrors, "wheels": wheels}


def test_lock_resolves_through_the_mirrors_alone(mirrored_checkout, tmp_path):
    proj, mirror = mirrored_checkout["root"], mirrored_checkout["mirror"]
    (proj / "build" / f"{ALIAS}.json").unlink()
    env = _upstream_only_through(mirror.url)
    env.update(ENGINEFAB_CACHE=str(tmp_path / "cache"), UV_CACHE_DIR=str(tmp_path / "uv-cache"))
    p = enginefab("lock", ALIAS, cwd=proj, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    # the same bytes as the lock made against upstream: URLs in the lock are upstream's
    assert (proj / "build" / f"{ALIAS}.json").read_bytes() == (ROOT / "build" / f"{ALIAS}.json").read_bytes()
    # and everything came from the mirror: uv's and the lock's index pages, PEP 658 metadata,
    # the signed apt index and its Packages file
    for name in mirrored_checkout["wheels"]:
        assert mirror.asked(f"/simple/{name}/"), name
    assert len(mirror.asked(".metadata")) == len(mirrored_checkout["wheels"])
    assert mirror.asked("/debian/dists/bullseye/InRelease") and mirror.asked("binary-arm64/Packages.xz")


def test_fetch_goes_through_a_url_prefix_mirror(mirrored_checkout, tmp_path, monkeypatch):
    """The builder's fetcher: an upstream URL from the lock, served by the mirror, verified."""
    from enginefab.transport import download

    mirror, inp = mirrored_checkout["mirror"], mirrored_checkout["wheels"]["typing-extensions"]
    rel = inp["url"][len(FILES):]
    real = download.fetch(download.Want(url=inp["url"], sha256=inp["sha256"], size=inp["size"]), session_for())
    mirror.put(f"files/{rel}", real.read_bytes())
    for k, v in _upstream_only_through(mirror.url).items():
        monkeypatch.setenv(k, v)
    session = session_for(mirrors=mirrored_checkout["mirrors"], downloads=tmp_path / "cache")  # as ENGINEFAB_MIRRORS sets it
    got = download.fetch(download.Want(url=inp["url"], sha256=inp["sha256"], size=inp["size"]), session)
    assert got.read_bytes() == real.read_bytes()
    assert mirror.asked(f"/files/{rel}") == [f"/files/{rel}"]


def _tar_gz(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1
            t.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0), raw.getvalue()


def test_base_image_resolves_through_a_registry_mirror(registry, tmp_path):
    """docker.io/library/tiny:1@<index> is asked for on the mirror (127.0.0.1:PORT/hub), index →
    the arm64 manifest → config and layers, each pinned by digest, size and diff_id."""
    from enginefab.engines.model import OciRef
    from enginefab.lock import oci
    from enginefab.transport.client import RegistryClient
    from enginefab.transport.reference import parse_reference

    repo = "hub/library/tiny"
    client = RegistryClient.for_reference(parse_reference(f"{registry.host}/{repo}:1"))
    manifests = []
    for arch in ("amd64", "arm64"):
        layer, plain = _tar_gz({"etc/os-release": (ROOT / "engines" / "platforms.toml").read_bytes(),
                                "etc/arch": arch.encode()})
        config = json.dumps({"architecture": arch, "os": "linux", "config": {},
                             "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(plain).hexdigest()]}},
                            sort_keys=True).encode()
        for blob in (layer, config):
            client.upload_blob_bytes(repo, blob)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": len(config),
                       "digest": "sha256:" + hashlib.sha256(config).hexdigest()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": len(layer),
                        "digest": "sha256:" + hashlib.sha256(layer).hexdigest()}]}, sort_keys=True).encode()
        digest = client.put_manifest(repo, f"1-{arch}", manifest, "application/vnd.oci.image.manifest.v1+json")
        manifests.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
                          "size": len(manifest), "platform": {"os": "linux", "architecture": arch,
                                                              **({"variant": "v8"} if arch == "arm64" else {})},
                          "_layer": layer, "_plain": plain})
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": [{k: v for k, v in m.items() if not k.startswith("_")} for m in manifests]},
                       sort_keys=True).encode()
    index_digest = client.put_manifest(repo, "1", index, "application/vnd.oci.image.index.v1+json")

    mirrors = tmp_path / "mirrors.toml"
    mirrors.write_text(f'[registries]\n"docker.io" = "{registry.host}/hub"\n')
    ref = OciRef(reference="docker.io/library/tiny:1", digest=index_digest, source="this test", trust="third-party")
    inputs, manifest_digest = oci.resolve(ref, {"os": "linux", "architecture": "arm64", "variant": "v8"}, image="t",
                                          session=session_for(mirrors=mirrors))
    arm = manifests[1]
    assert manifest_digest == arm["digest"]
    head, man, cfg, lay = inputs
    # the lock names upstream, never the mirror
    assert head.url == f"docker.io/library/tiny@{index_digest}" and head.size == len(index)
    assert all(i.url.startswith("docker.io/library/tiny@sha256:") for i in inputs)
    assert man.sha256 == arm["digest"][7:] and man.size == arm["size"]
    assert lay.sha256 == hashlib.sha256(arm["_layer"]).hexdigest() and lay.size == len(arm["_layer"])
    assert lay.diff_id == "sha256:" + hashlib.sha256(arm["_plain"]).hexdigest()
    assert cfg.media_type == "application/vnd.oci.image.config.v1+json"
