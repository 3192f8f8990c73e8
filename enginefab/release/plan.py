"""What a release publishes, decided before anything is sent: per image its repository, tags and
referrers, and the multi-arch indexes — a pure function of the built images, their check reports,
the target and the release tag. The release record is this plan; the registry is then asked what
it lacks of it (`state.py`), and only that is pushed.

Tags: every image gets its canonical name and its alias; with a release tag T also `<alias>-T`
(images of one engine share a repository, so a bare T would be ambiguous); an index gets its own
tag and, with T, `<index tag>-T`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from enginefab.assemble.image import MANIFEST, Built, iso
from enginefab.assemble.index import IndexPlan
from enginefab.core import canonical
from enginefab.core.definition import Definition
from enginefab.core.errors import MatrixError
from enginefab.core.settings import DEFAULT_BUILDER
from enginefab.engines.matrix import Image
from enginefab.publish.publish import evidence, repository_for
from enginefab.publish.referrers import artifact_manifest, referrer_descriptor

TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def check_release_tag(tag: str, longest: str) -> None:
    """A release tag must make valid OCI tags when appended to every image's alias."""
    if not TAG.fullmatch(tag) or not TAG.fullmatch(f"{longest}-{tag}"):
        raise MatrixError(f"release tag {tag!r} is not a valid tag suffix (letters, digits, '.', '_', '-'; "
                          f"at most {127 - len(longest)} characters here, '{longest}-{tag}' must be a tag)",
                          input="--tag", fix="pass e.g. --tag 2026.12 or --tag v3")


def lock_digest(defns: list[Definition]) -> str:
    """One digest for the definitions released: alias → digest of its canonical JSON."""
    return canonical.digest(canonical.dumps({d.image.alias: canonical.digest(d.to_json()) for d in defns}))


@dataclass(frozen=True)
class PlannedImage:
    image: Image
    defn: Definition
    built: Built
    repository: str
    tags: tuple[str, ...]
    referrers: tuple[dict, ...]  # descriptors of the artifact manifests (what the registry lists)
    referrer_manifests: tuple[bytes, ...] = field(repr=False, default=())

    @property
    def size(self) -> int:
        """Bytes of the image: its manifest, config and layers."""
        doc = json.loads(self.built.manifest)
        return len(self.built.manifest) + doc["config"]["size"] + sum(la["size"] for la in doc["layers"])

    def as_dict(self, host: str) -> dict:
        return {"alias": self.image.alias, "name": self.image.name, "repository": self.repository,
                "digest": self.built.digest, "size": self.size, "tags": list(self.tags),
                "reference": f"{host}/{self.repository}:{self.image.name}",
                "by_digest": f"{host}/{self.repository}@{self.built.digest}",
                "referrers": list(self.referrers)}


@dataclass(frozen=True)
class PlannedIndex:
    plan: IndexPlan
    repository: str
    tags: tuple[str, ...]

    def as_dict(self, host: str) -> dict:
        p = self.plan
        return {"tag": p.tag, "tags": list(self.tags), "digest": p.digest, "repository": self.repository,
                "reference": f"{host}/{self.repository}:{p.tag}",
                "members": [{"alias": mm.alias, "digest": mm.digest, "platform": mm.platform} for mm in p.members]}


def image_tags(img: Image, release_tag: str | None) -> tuple[str, ...]:
    return (img.name, img.alias) + ((f"{img.alias}-{release_tag}",) if release_tag else ())


def plan_image(img: Image, defn: Definition, built: Built, prefix: str, report: bytes | None,
               release_tag: str | None, builder_id: str = DEFAULT_BUILDER) -> PlannedImage:
    subject = {"mediaType": MANIFEST, "digest": built.digest, "size": len(built.manifest)}
    raws = tuple(artifact_manifest(a, subject, iso(defn.source_date_epoch))
                 for a in evidence(defn, built.digest, report, builder_id))
    return PlannedImage(img, defn, built, repository_for(prefix, img), image_tags(img, release_tag),
                        tuple(referrer_descriptor(r) for r in raws), raws)


def plan_index(p: IndexPlan, repository: str, release_tag: str | None) -> PlannedIndex:
    return PlannedIndex(p, repository, (p.tag,) + ((f"{p.tag}-{release_tag}",) if release_tag else ()))
