"""The referrers fallback index (`sha256-<hex>` tag): read-modify-write that keeps what others
attached, never lists a referrer twice, and gives the same bytes for the same set."""

from __future__ import annotations

import json

from enginefab.assemble.image import MANIFEST
from enginefab.core import canonical
from enginefab.publish.referrers import Artifact, artifact_manifest, attach, merged_index, referrer_descriptor
from enginefab.transport.client import RegistryClient, fallback_tag
from tests.conftest import validate_oci

SUBJECT = {"mediaType": MANIFEST, "digest": "sha256:" + "ab" * 32, "size": 1234}


def desc(art: Artifact) -> dict:
    return referrer_descriptor(artifact_manifest(art, SUBJECT, "1970-01-01T00:00:01Z"))


def test_merged_index_keeps_foreign_entries_and_is_idempotent():
    a = desc(Artifact("application/spdx+json", b'{"spdx":1}', "a.spdx.json"))
    b = desc(Artifact("application/vnd.in-toto+json", b'{"x":2}', "b.intoto.json"))
    foreign = {"mediaType": MANIFEST, "digest": "sha256:" + "cd" * 32, "size": 99,
               "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json"}
    existing = canonical.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                "manifests": [foreign]})
    new = merged_index(existing, [a, b])
    doc = json.loads(new)
    validate_oci(doc, "image-index-schema.json")
    assert {d["digest"] for d in doc["manifests"]} == {a["digest"], b["digest"], foreign["digest"]}
    assert merged_index(new, [b, a]) is None  # nothing to add: no write
    assert merged_index(merged_index(None, [b]), [a]) == merged_index(merged_index(None, [a]), [b])


def test_attach_on_a_registry_without_the_referrers_api(registry):
    client = RegistryClient(registry.host, plain_http=True)
    cfg = canonical.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
    client.upload_blob_bytes("t/r", cfg)
    raw = canonical.dumps({"schemaVersion": 2, "mediaType": MANIFEST, "layers": [],
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": canonical.digest(cfg), "size": len(cfg)}})
    subject = {"mediaType": MANIFEST, "digest": client.put_manifest("t/r", "img", raw, MANIFEST), "size": len(raw)}
    arts = [Artifact("application/spdx+json", b'{"n":1}', "s.json")]
    got = attach(client, "t/r", subject, arts, "1970-01-01T00:00:01Z")
    assert [a.via for a in got] == ["fallback"]
    first = client.get_manifest_raw("t/r", fallback_tag(subject["digest"]))[0]
    attach(client, "t/r", subject, arts, "1970-01-01T00:00:01Z")  # again: same index, not rewritten
    assert client.get_manifest_raw("t/r", fallback_tag(subject["digest"]))[0] == first
    descs, how = client.referrers("t/r", subject["digest"])
    assert how == "fallback" and [d["digest"] for d in descs] == [got[0].descriptor["digest"]]
    man = json.loads(client.get_manifest_raw("t/r", descs[0]["digest"])[0])
    validate_oci(man, "image-manifest-schema.json")
    assert man["subject"] == subject and man["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
