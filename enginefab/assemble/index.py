"""Multi-arch image indexes: one OCI image index over the builds of one engine version for
several arches.

Tag scheme: the canonical name with the accelerator and the arch left out, e.g.
``pytorch_1.8.0-cuda_10.2-py_3.9-debian_11-x86_64`` and ``pytorch_1.8.0-cpu-py_3.9-debian_11-aarch64``
→ ``pytorch_1.8.0-py_3.9-debian_11``. The images of one index share engine (and framework)
version, Python and OS; they differ in arch, and each arch must have exactly one image in the
group (two x86_64 builds — CUDA 10.2 and 11.0 — would make the platform ambiguous, so no index is
made for such a group and the reason is returned). Pure planning, except the two functions that
read and write an OCI layout (`layout_members`, `add_to_layout`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from enginefab.assemble.image import INDEX, MANIFEST, REF_NAME, Built, index_json, layout_index
from enginefab.core import canonical
from enginefab.core.fsutil import write_atomic
from enginefab.engines.matrix import Image

TITLE = "org.opencontainers.image.title"


def index_tag(img: Image) -> str:
    """The multi-arch tag of an image: its canonical name without accelerator and arch."""
    if img.derived:  # a custom image's name is its own: its tag
        return img.name
    n = img.parsed_name
    return dataclasses.replace(n, accelerator=None, accelerator_version=None, arch=None).format()


@dataclass(frozen=True)
class Member:
    name: str
    alias: str
    digest: str
    size: int
    platform: dict[str, str]

    def descriptor(self) -> dict:
        return {"mediaType": MANIFEST, "digest": self.digest, "size": self.size,
                "platform": dict(self.platform), "annotations": {TITLE: self.name}}

    @classmethod
    def of(cls, img: Image, built: Built) -> "Member":
        return cls(img.name, img.alias, built.digest, len(built.manifest), dict(built.platform))


@dataclass(frozen=True)
class IndexPlan:
    engine: str  # the repository's last component (images of one engine share a repository)
    tag: str
    members: tuple[Member, ...]

    @property
    def raw(self) -> bytes:
        doc = json.loads(index_json([m.descriptor() for m in self.members]))
        doc["annotations"] = {TITLE: self.tag}
        return canonical.dumps(doc)

    @property
    def digest(self) -> str:
        return canonical.digest(self.raw)

    def descriptor(self, ref: str | None = None) -> dict:
        d = {"mediaType": INDEX, "digest": self.digest, "size": len(self.raw)}
        if ref:
            d["annotations"] = {REF_NAME: ref}
        return d


def _platform_key(p: dict[str, str]) -> tuple[str, str, str]:
    return (p.get("os", ""), p.get("architecture", ""), p.get("variant", ""))


def plan_indexes(images: list[tuple[Image, Built | Member]]) -> tuple[list[IndexPlan], list[str]]:
    """Indexes over these images (built here, or found in the registry), and why any group of
    several arches got none."""
    groups: dict[tuple[str, str], list[tuple[Image, Member]]] = {}
    for img, b in images:
        groups.setdefault(group_key(img), []).append(
            (img, b if isinstance(b, Member) else Member.of(img, b)))
    plans, notes = [], []
    for (engine, tag), members in sorted(groups.items()):
        arches = [img.arch for img, _ in members]
        if len(set(arches)) < 2:
            continue
        if any(img.name == tag for img, _ in members):
            notes.append(f"no index {tag}: the name does not say the arch, so the index tag would be an image's tag")
            continue
        dup = sorted({a for a in arches if arches.count(a) > 1})
        if dup:
            names = ", ".join(sorted(img.alias for img, _ in members if img.arch in dup))
            notes.append(f"no index {tag}: several images for {', '.join(dup)} ({names}) would make the platform ambiguous")
            continue
        ms = sorted((mm for _, mm in members), key=lambda mm: _platform_key(mm.platform))
        plans.append(IndexPlan(engine, tag, tuple(ms)))
    return plans, notes


def add_to_layout(out: Path, plans: list[IndexPlan]) -> None:
    """Write the indexes into an OCI layout that already holds their member images: the index
    blob, and an index.json entry named by the index tag (other entries are kept)."""
    for p in plans:
        write_atomic(out / "blobs" / "sha256" / p.digest.split(":", 1)[1], p.raw)
    with layout_index(out) as entries:
        for p in plans:
            entries[p.tag] = p.descriptor(p.tag)


def layout_members(out: Path, images: list[Image]) -> list[tuple[Image, Member]]:
    """The matrix images an OCI layout holds under their canonical names, as index members."""
    by_name = {img.name: img for img in images}
    found = []
    for m in json.loads((out / "index.json").read_bytes()).get("manifests", []):
        img = by_name.get(m.get("annotations", {}).get(REF_NAME, ""))
        if img is not None and m.get("mediaType") == MANIFEST:
            found.append((img, Member(img.name, img.alias, m["digest"], m["size"], dict(img.oci_platform))))
    return found


def group_key(img: Image) -> tuple[str, str]:
    return (img.engine.name, index_tag(img))
