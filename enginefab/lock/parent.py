"""The parent of a derived image (`from` in engines/): its manifest, config and layers, pinned
as the child's base, byte for byte.

A matrix parent is built here (the caller builds it and hands over its manifest and config); a
registry parent is read by digest through the registry client (or its mirror). Either way the
child's base layer is the parent's manifest, config and layer blobs (`oci` inputs), and its
`Parent` record holds what the child inherits (the image config) and what it must respect: the
parent's Python distributions (constraints, never reinstalled) and Debian packages (not fetched
again). For a registry parent those are read from its layers (the dpkg status, `.dist-info`
directories); for a matrix parent from its definition.
"""

from __future__ import annotations

import gzip
import json
import re
import tarfile
from pathlib import PurePosixPath

from debian import deb822
from packaging.utils import canonicalize_name

from enginefab.core.canonical import sha256_hex
from enginefab.core.definition import Input, Parent
from enginefab.core.errors import EnginefabError, LockError
from enginefab.lock.parentrecord import ParentPins, config_of, layer_inputs
from enginefab.lock.oci import INDEX_TYPES, mirrored
from enginefab.lock.stackdebs import STATUS
from enginefab.transport.blobs import fetch_base_blob
from enginefab.transport.client import RegistryClient
from enginefab.transport.reference import parse_reference
from enginefab.transport.session import Session

#: a Python distribution installed in an image: <dir>/<name>-<version>.dist-info/…
_DIST_INFO = re.compile(r"(?:^|/)(?:site|dist)-packages/([^/]+?)-([^/-]+)\.dist-info(?:/|$)")


def from_registry(reference: str, digest: str, platform: dict[str, str], *, image: str,
                  session: Session) -> ParentPins:
    """A registry parent by digest (an index: the platform's manifest), and what its layers hold
    (through the session: its registry mirrors, credentials and download cache)."""
    upstream = parse_reference(f"{reference}@{digest}")
    name = f"{upstream.registry}/{upstream.repository}"
    r = mirrored(upstream, session.mirrors)
    try:
        client = RegistryClient.for_reference(r, options=session.http_options, env=session.environ)
        raw, mt = client.get_manifest_raw(r.repository, digest)
        doc = json.loads(raw)
        head_size = len(raw)
        if mt in INDEX_TYPES or "manifests" in doc:
            chosen = _platform_manifest(doc, platform)
            if chosen is None:
                raise LockError(f"the parent {reference}@{digest} has no manifest for {platform['os']}/"
                                f"{platform['architecture']}", image=image,
                                fix="derive from an image built for this arch, or set the image's arch to the parent's")
            raw, mt = client.get_manifest_raw(r.repository, chosen)
        manifest_digest = "sha256:" + sha256_hex(raw)
        cfg = json.loads(raw)["config"]
        config = client.get_blob_bytes(r.repository, cfg["digest"], size=cfg["size"])
    except EnginefabError as e:
        if isinstance(e, LockError):
            raise
        raise LockError(f"the parent {reference}@{digest[:19]}… cannot be read: {e.message.splitlines()[0]}",
                        image=image, input=f"from = {reference}@{digest}",
                        fix="make the registry reachable (or mirror it in registry/mirrors.toml [registries]), "
                        "then lock again") from None
    tag = upstream.tag or "latest"
    base = layer_inputs(name, tag, digest, raw, mt, config, head_size)
    dists, debs = contents(base, image=image, session=session)
    rec = Parent(reference=f"{name}@{digest}", manifest=manifest_digest, config=config_of(config, image=image),
                 distributions=dists, debs=debs)
    return ParentPins(base=base, parent=rec)


def _platform_manifest(doc: dict, platform: dict[str, str]) -> str | None:
    for m in doc.get("manifests", []):
        p = m.get("platform", {})
        if (p.get("os"), p.get("architecture")) == (platform["os"], platform["architecture"]):
            return m["digest"]
    return None


def contents(base: list[Input], *, image: str, session: Session) -> tuple[dict[str, str], list[str]]:
    """(Python distributions, Debian package names) installed in a parent's layers: `.dist-info`
    directories, and the dpkg status (`var/lib/dpkg/status`, or one file per package under
    `status.d/` as enginefab and distroless write it), read in one pass over each layer."""
    dists: dict[str, str] = {}
    status: dict[str, str] = {}  # path → text; an upper layer's file replaces a lower one's
    for inp in base:
        if not (inp.media_type and ".layer." in inp.media_type):
            continue
        path = fetch_base_blob(inp, image=image, session=session)
        opener = gzip.open if "gzip" in inp.media_type else open
        with opener(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|") as tf:  # type: ignore[arg-type]
            for member in tf:
                name = member.name.lstrip("./")
                _note(name, dists)
                if member.isreg() and (name == STATUS or name.startswith(STATUS + ".d/")) and member.size < (64 << 20):
                    status[name] = tf.extractfile(member).read().decode("utf-8", "replace")  # type: ignore[union-attr]
    debs: set[str] = set()
    for text in status.values():
        for para in deb822.Packages.iter_paragraphs(text):
            if "Package" in para and para.get("Status", "install ok installed").endswith(" installed"):
                debs.add(para["Package"])
                for group in para.relations.get("provides", []):
                    debs.update(alt["name"] for alt in group)
    return dict(sorted(dists.items())), sorted(debs)


def _note(name: str, dists: dict[str, str]) -> None:
    """Record (or, for a whiteout, forget) the distribution a layer entry belongs to."""
    p = PurePosixPath(name.lstrip("./"))
    if p.name.startswith(".wh."):
        gone = _DIST_INFO.search(str(p.parent / p.name[4:]))
        if gone:
            dists.pop(canonicalize_name(gone.group(1)), None)
        return
    m = _DIST_INFO.search(str(p))
    if m:
        dists[canonicalize_name(m.group(1))] = m.group(2)
