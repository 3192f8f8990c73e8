"""Evidence attached to an image as OCI referrers: SBOM, provenance, check report.

Each is an OCI 1.1 artifact: an image manifest with an `artifactType`, the empty config, one
layer holding the document, and a `subject` naming the image manifest. A registry with the
referrers API indexes it by itself (it answers the manifest PUT with an `OCI-Subject` header);
on one without (Debian's docker-registry 2.8) we maintain the fallback tag `sha256-<hex>` of the
distribution spec: an image index listing the referrers, updated read-modify-write, idempotent
(a descriptor already listed is not added twice; the list is sorted, so the same set of
referrers always gives the same index bytes) and checked after the write.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from enginefab.assemble.image import INDEX, MANIFEST, index_json
from enginefab.core import canonical
from enginefab.core.errors import RegistryError
from enginefab.publish.pull import INDEX_TYPES, parse_platform, pick_platform
from enginefab.transport.client import RegistryClient, fallback_tag

REPORT_TYPE = "application/vnd.enginefab.check.report.v1+json"
EMPTY = b"{}"
EMPTY_DESC = {"mediaType": "application/vnd.oci.empty.v1+json", "digest": canonical.digest(EMPTY), "size": 2,
              "data": "e30="}
TITLE = "org.opencontainers.image.title"
CREATED = "org.opencontainers.image.created"


@dataclass(frozen=True)
class Artifact:
    artifact_type: str
    content: bytes
    filename: str
    media_type: str = ""  # of the layer; the artifact type when empty

    @property
    def layer(self) -> dict:
        return {"mediaType": self.media_type or self.artifact_type, "digest": canonical.digest(self.content),
                "size": len(self.content), "annotations": {TITLE: self.filename}}


def artifact_manifest(art: Artifact, subject: dict, created: str) -> bytes:
    """The artifact's manifest bytes (canonical JSON)."""
    return canonical.dumps({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": art.artifact_type,
        "config": EMPTY_DESC,
        "layers": [art.layer],
        "subject": {"mediaType": subject["mediaType"], "digest": subject["digest"], "size": subject["size"]},
        "annotations": {CREATED: created, TITLE: art.filename},
    })


def referrer_descriptor(raw: bytes) -> dict:
    """How a referrer is listed: its descriptor with artifactType and annotations."""
    doc = json.loads(raw)
    d = {"mediaType": doc.get("mediaType", MANIFEST), "digest": canonical.digest(raw), "size": len(raw)}
    at = doc.get("artifactType") or doc.get("config", {}).get("mediaType")
    if at:
        d["artifactType"] = at
    if doc.get("annotations"):
        d["annotations"] = doc["annotations"]
    return d


def merged_index(existing: bytes | None, add: list[dict]) -> bytes | None:
    """The fallback index with `add` in it; None when every descriptor is listed already."""
    current = json.loads(existing).get("manifests", []) if existing else []
    have = {d["digest"] for d in current}
    new = [d for d in add if d["digest"] not in have]
    if not new:
        return None
    manifests = sorted(current + new, key=lambda d: (d.get("artifactType", ""), d["digest"]))
    return index_json(manifests)


def update_fallback(client: RegistryClient, repository: str, subject_digest: str, descs: list[dict],
                    attempts: int = 3) -> bool:
    """Add `descs` to the fallback tag of `subject_digest`; True if the index was written."""
    tag = fallback_tag(subject_digest)
    wrote = False
    for _ in range(attempts):
        existing = _get_or_none(client, repository, tag)
        new = merged_index(existing, descs)
        if new is None:
            return wrote
        client.put_manifest(repository, tag, new, INDEX)
        wrote = True
        # another writer may have replaced the tag between our read and write: check, else retry
    raise RegistryError(f"the referrers tag {repository}:{tag} keeps changing under us",
                        fix="another client is writing referrers of this image at the same time; retry later")


def _get_or_none(client: RegistryClient, repository: str, ref: str) -> bytes | None:
    if client.head_manifest(repository, ref) is None:
        return None
    return client.get_manifest_raw(repository, ref)[0]


@dataclass(frozen=True)
class Attached:
    descriptor: dict
    uploaded: int
    via: str  # "api" (the registry indexes referrers) or "fallback" (we keep the sha256-<hex> tag)


def attach(client: RegistryClient, repository: str, subject: dict, artifacts: list[Artifact],
           created: str) -> list[Attached]:
    """Push artifacts whose subject is `subject` (a manifest descriptor) and make them listable."""
    out: list[tuple[dict, int, bool]] = []
    for art in artifacts:
        n = client.upload_blob_bytes(repository, EMPTY) + client.upload_blob_bytes(repository, art.content)
        raw = artifact_manifest(art, subject, created)
        digest, r = client.put_manifest_response(repository, canonical.digest(raw), raw, MANIFEST)
        out.append((referrer_descriptor(raw), n, r.headers.get("OCI-Subject") == subject["digest"]))
    fallback = [d for d, _, api in out if not api]
    if fallback:
        update_fallback(client, repository, subject["digest"], fallback)
    return [Attached(d, n, "api" if api else "fallback") for d, n, api in out]


def list_referrers(client: RegistryClient, repository: str, digest: str,
                   artifact_type: str | None = None) -> tuple[list[dict], str]:
    """Referrers of `digest` (the API if the registry has one, else the fallback tag)."""
    descs, how = client.referrers(repository, digest)
    if artifact_type:
        descs = [d for d in descs if d.get("artifactType") == artifact_type]
    return descs, how


def resolve_subject(client: RegistryClient, ref, platform: str | None = None) -> str:
    """The manifest digest a reference names (a platform's member when it names an index)."""
    raw, mt = client.get_manifest_raw(ref.repository, ref.ref)
    if platform and mt in INDEX_TYPES:
        return pick_platform(json.loads(raw), parse_platform(platform), str(ref))["digest"]
    return canonical.digest(raw)
