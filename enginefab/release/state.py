"""What the registry lacks of a planned release (reads only: HEAD of tags, the referrers list).

An empty answer means the release is published already: every tag resolves to the planned
digest and every referrer is listed for its subject. A second `release` of the same lock then
publishes nothing.
"""

from __future__ import annotations

from enginefab.release.plan import PlannedImage, PlannedIndex
from enginefab.transport.client import RegistryClient


def _tag_missing(client: RegistryClient, repository: str, tag: str, digest: str) -> bool:
    got = client.head_manifest(repository, tag)
    return got is None or got[0] != digest


def missing(client: RegistryClient, images: list[PlannedImage], indexes: list[PlannedIndex]) -> list[str]:
    """One line per thing the registry does not have yet (`repo:tag`, `repo@digest referrer …`)."""
    out = []
    for p in images:
        for t in p.tags:
            if _tag_missing(client, p.repository, t, p.built.digest):
                out.append(f"{p.repository}:{t} → {p.built.digest}")
        listed = {d["digest"] for d in client.referrers(p.repository, p.built.digest)[0]}
        for d in p.referrers:
            if d["digest"] not in listed:
                out.append(f"{p.repository}@{p.built.digest}: referrer {d.get('artifactType')} {d['digest']}")
    for x in indexes:
        for t in x.tags:
            if _tag_missing(client, x.repository, t, x.plan.digest):
                out.append(f"{x.repository}:{t} → {x.plan.digest} (index)")
    return out
