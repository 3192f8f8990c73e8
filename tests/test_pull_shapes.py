"""`enginefab pull` of each shape a reference can name, against a real docker-registry holding two
small single-layer images (amd64, arm64) and an index over them: the whole index, one platform
of it, a single image, and a single image asked for the wrong platform."""

from __future__ import annotations

import json

import pytest

from enginefab.assemble.image import INDEX, MANIFEST, index_json
from enginefab.core import canonical
from enginefab.core.errors import RegistryError
from enginefab.publish.pull import pull
from enginefab.transport.client import RegistryClient
from enginefab.transport.reference import parse_reference

REPO = "shapes/tiny"


def _image(client: RegistryClient, arch: str) -> tuple[bytes, dict]:
    layer = f"the {arch} layer".encode()
    config = canonical.dumps({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
    for blob in (layer, config):
        client.upload_blob_bytes(REPO, blob)
    manifest = canonical.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": canonical.digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": canonical.digest(layer),
                    "size": len(layer)}]})
    client.put_manifest(REPO, arch, manifest, MANIFEST)
    return manifest, {"mediaType": MANIFEST, "digest": canonical.digest(manifest), "size": len(manifest),
                      "platform": {"os": "linux", "architecture": arch}}


@pytest.fixture
def shapes(registry):
    client = RegistryClient(registry.host, plain_http=True)
    client.prepare(REPO, push=True)
    members = [_image(client, arch)[1] for arch in ("amd64", "arm64")]
    index = index_json(members)
    client.put_manifest(REPO, "both", index, INDEX)
    return registry.host, client, members, canonical.digest(index)


def _pull(host: str, client: RegistryClient, tag: str, out, platform: str | None = None):
    return pull(client, parse_reference(f"{host}/{REPO}:{tag}"), out, platform=platform)


def test_the_whole_index_brings_every_member_and_the_index(shapes, tmp_path):
    host, client, members, index_digest = shapes
    res = _pull(host, client, "both", tmp_path / "all")
    assert res.manifests == [m["digest"] for m in members] + [index_digest] and res.digest == index_digest
    assert res.blobs == 4 and res.downloaded_bytes > 0 and res.reused == 0
    (entry,) = json.loads((tmp_path / "all" / "index.json").read_text())["manifests"]
    assert entry["digest"] == index_digest and entry["mediaType"] == INDEX


def test_one_platform_of_the_index_brings_that_image_alone(shapes, tmp_path):
    host, client, members, _ = shapes
    res = _pull(host, client, "both", tmp_path / "arm", platform="linux/aarch64")
    assert res.manifests == [members[1]["digest"]] and res.digest == members[1]["digest"] and res.blobs == 2
    (entry,) = json.loads((tmp_path / "arm" / "index.json").read_text())["manifests"]
    assert entry["platform"] == {"os": "linux", "architecture": "arm64"}
    again = _pull(host, client, "both", tmp_path / "arm", platform="linux/arm64")
    assert again.reused == 2 and again.downloaded_bytes == 0  # what the layout has is re-hashed, not fetched


def test_a_single_image_pulls_and_refuses_another_platform(shapes, tmp_path):
    host, client, members, _ = shapes
    res = _pull(host, client, "amd64", tmp_path / "one", platform="linux/amd64")
    assert res.manifests == [members[0]["digest"]] and res.blobs == 2
    with pytest.raises(RegistryError, match="is a single image for linux/amd64, not linux/arm64"):
        _pull(host, client, "amd64", tmp_path / "two", platform="linux/arm64")
