"""`enginefab pull REF --out DIR [--platform OS/ARCH]`: an image (or a whole multi-arch index)
from a registry into an OCI image layout, every byte verified.

Manifests are hashed and compared with the digest that named them (the tag's digest is the hash
of the bytes the registry served, recorded in the layout); every blob is hashed while it
streams and lands in the layout only if its digest and size match its descriptor. A blob already
in the layout is re-hashed, not trusted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from enginefab.assemble.image import INDEX, MANIFEST, REF_NAME, layout_index
from enginefab.core import canonical
from enginefab.core.errors import RegistryError
from enginefab.core.fsutil import sha256_file, write_atomic
from enginefab.transport.client import RegistryClient
from enginefab.transport.landing import sweep
from enginefab.transport.reference import Reference

INDEX_TYPES = (INDEX, "application/vnd.docker.distribution.manifest.list.v2+json")


def parse_platform(text: str) -> dict[str, str]:
    """OS/ARCH[/VARIANT] → an OCI platform (amd64, arm64, …; x86_64 and aarch64 accepted)."""
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise RegistryError(f"{text!r} is not OS/ARCH[/VARIANT]", fix="for example linux/arm64 or linux/amd64")
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(parts[1], parts[1])
    p = {"os": parts[0], "architecture": arch}
    if len(parts) == 3:
        p["variant"] = parts[2]
    return p


def matches(want: dict[str, str], have: dict[str, str]) -> bool:
    return all(have.get(k) == v for k, v in want.items())


@dataclass
class PullResult:
    reference: str
    digest: str
    media_type: str
    manifests: list[str] = field(default_factory=list)
    blobs: int = 0
    downloaded_bytes: int = 0
    reused: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def pick_platform(index: dict, want: dict[str, str], where: str) -> dict:
    members = [m for m in index.get("manifests", []) if isinstance(m, dict) and isinstance(m.get("platform", {}), dict)]
    found = [m for m in members if matches(want, m.get("platform", {}))]
    if not found:
        have = ", ".join("/".join(filter(None, (p.get("os"), p.get("architecture"), p.get("variant"))))
                         for p in (m.get("platform", {}) for m in members))
        raise RegistryError(f"{where} has no image for {'/'.join(want.values())} (it has: {have or 'none'})",
                            fix="pick one of the platforms listed")
    return found[0]


class _Layout:
    def __init__(self, out: Path) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "oci-layout", canonical.dumps({"imageLayoutVersion": "1.0.0"}))
        sweep(out / "blobs" / "sha256")  # what an earlier pull that was killed may have left

    def path(self, digest: str) -> Path:
        return self.out / "blobs" / "sha256" / digest.split(":", 1)[1]

    def has(self, digest: str, size: int) -> bool:
        p = self.path(digest)
        if not p.is_file():
            return False
        hexd, n = sha256_file(p)
        return n == size and "sha256:" + hexd == digest

    def write(self, digest: str, data: bytes) -> None:
        write_atomic(self.path(digest), data)

    def add_ref(self, ref: str, desc: dict) -> None:
        with layout_index(self.out) as entries:
            entries[ref] = {**desc, "annotations": {REF_NAME: ref}}


_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def _document(raw: bytes, where: str) -> dict:
    """A manifest or index the registry served, as JSON, or a clear refusal."""
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise RegistryError(f"{where} is not a JSON manifest or index: refused",
                            fix="the registry's copy is corrupt or it is hostile")
    return doc


def _descriptor(desc: object, where: str) -> dict:
    """A descriptor we can follow: a sha256 digest (it names a file) and a size (it caps the download)."""
    if not (isinstance(desc, dict) and isinstance(desc.get("digest"), str) and _DIGEST.match(desc["digest"])
            and isinstance(desc.get("size"), int) and not isinstance(desc["size"], bool) and desc["size"] >= 0):
        raise RegistryError(f"{where} has a descriptor without a sha256 digest and a size: refused",
                            fix="the registry's copy is corrupt or it is hostile")
    return desc


@dataclass
class _Pull:
    """One pull into a layout: fetches manifests and blobs, counts what it did into `res`."""

    client: RegistryClient
    ref: Reference
    lay: _Layout
    res: PullResult
    progress: object = None

    def manifest(self, desc: dict) -> bytes:
        """The manifest a descriptor names (its digest verified by the client, its size here)."""
        desc = _descriptor(desc, str(self.ref))
        body, _ = self.client.get_manifest_raw(self.ref.repository, desc["digest"])  # verified against the digest
        if len(body) != desc["size"]:
            raise RegistryError(f"manifest {desc['digest']} is {len(body)} bytes, its descriptor says {desc['size']}")
        return body

    def image(self, body: bytes, d: str) -> None:
        """An image manifest's config and layers (each at most its descriptor's size), then the manifest."""
        repo = self.ref.repository
        doc = _document(body, f"{self.client.host}/{repo}@{d}")
        where = f"manifest {d} of {self.client.host}/{repo}"
        layers = doc.get("layers", [])
        if not isinstance(layers, list):
            raise RegistryError(f"{where} has no list of layers: refused")
        for desc in [_descriptor(x, where) for x in [doc.get("config"), *layers]]:
            self.res.blobs += 1
            if self.lay.has(desc["digest"], desc["size"]):
                self.res.reused += 1
                continue
            self.client.download_blob_to(repo, desc["digest"], self.lay.path(desc["digest"]), progress=self.progress,
                                         size=desc["size"])  # never more bytes than the descriptor's size
            self.res.downloaded_bytes += desc["size"]
        self.lay.write(d, body)
        self.res.manifests.append(d)

    def index(self, raw: bytes, index: dict, top: dict, platform: str | None) -> dict:
        """A multi-arch index: the platform's member (its descriptor is the new top), or every member
        and the index itself."""
        ref = self.ref
        if not isinstance(index.get("manifests"), list):
            raise RegistryError(f"{ref} is an index without a list of manifests: refused")
        if platform:
            member = pick_platform(index, parse_platform(platform), str(ref))
            self.image(self.manifest(member), member["digest"])
            top = {"mediaType": member.get("mediaType", MANIFEST), "digest": member["digest"], "size": member["size"],
                   "platform": member.get("platform", {})}
            self.res.digest, self.res.media_type = member["digest"], top["mediaType"]
            return top
        for member in index.get("manifests", []):
            self.image(self.manifest(member), member["digest"])
        self.lay.write(top["digest"], raw)
        self.res.manifests.append(top["digest"])
        return top

    def require_platform(self, doc: dict, platform: str) -> None:
        """A single image pulled with --platform must be for that platform (its config says)."""
        ref = self.ref
        cfg_desc = _descriptor(doc.get("config"), str(ref))
        cfg = _document(self.client.get_blob_bytes(ref.repository, cfg_desc["digest"], size=cfg_desc["size"]),
                        f"the config of {ref}")
        want = parse_platform(platform)
        have = {"os": cfg.get("os", ""), "architecture": cfg.get("architecture", "")}
        if cfg.get("variant"):
            have["variant"] = cfg["variant"]
        if not matches(want, have):
            raise RegistryError(f"{ref} is a single image for {have['os']}/{have['architecture']}, "
                                f"not {platform}", fix="pull it without --platform, or pick another reference")


def pull(client: RegistryClient, ref: Reference, out: Path, *, platform: str | None = None,
         progress=None) -> PullResult:
    raw, mt = client.get_manifest_raw(ref.repository, ref.ref)
    digest = canonical.digest(raw)
    top_doc = _document(raw, str(ref))
    job = _Pull(client, ref, _Layout(out), PullResult(reference=str(ref), digest=digest, media_type=mt), progress)
    top = {"mediaType": mt or MANIFEST, "digest": digest, "size": len(raw)}
    if mt in INDEX_TYPES or top_doc.get("manifests") is not None:
        top = job.index(raw, top_doc, top, platform)
    else:
        if platform:
            job.require_platform(top_doc, platform)
        job.image(raw, digest)
    job.lay.add_ref(ref.tag or digest, top)
    return job.res
