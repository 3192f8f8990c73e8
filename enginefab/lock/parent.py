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
from dataclasses import dataclass
from pathlib import PurePosixPath

from debian import deb822
from packaging.utils import canonicalize_name

from enginefab.core.canonical import sha256_hex
from enginefab.core.definition import Definition, ImageConfig, Input, Parent
from enginefab.core.errors import EnginefabError, LockError
from enginefab.lock import deb
from enginefab.lock.oci import INDEX_TYPES, mirrored
from enginefab.lock.stackdebs import STATUS
from enginefab.transport.blobs import fetch_base_blob
from enginefab.transport.client import RegistryClient
from enginefab.transport.reference import parse_reference
from enginefab.transport.session import Session

#: a Python distribution installed in an image: <dir>/<name>-<version>.dist-info/…
_DIST_INFO = re.compile(r"(?:^|/)(?:site|dist)-packages/([^/]+?)-([^/-]+)\.dist-info(?:/|$)")


@dataclass(frozen=True)
class ParentPins:
    """The child's base layer inputs and its record of the parent."""

    base: list[Input]
    parent: Parent


def layer_inputs(name: str, version: str, head: str, manifest: bytes, media_type: str | None,
                 config: bytes, head_size: int | None = None) -> list[Input]:
    """The `oci` inputs of a parent's manifest: the reference (`head`, the digest engines/ or the
    build names), the manifest, the config and each layer blob with its diff_id. Pure."""
    doc = json.loads(manifest)
    digest = "sha256:" + sha256_hex(manifest)
    cfg = doc["config"]
    diff_ids = json.loads(config).get("rootfs", {}).get("diff_ids", [])
    out = [Input(kind="oci", name=name, version=version, url=f"{name}@{head}", sha256=head.split(":", 1)[1],
                 size=len(manifest) if head_size is None else head_size),
           Input(kind="oci", name=f"{name} manifest", version=version, url=f"{name}@{digest}",
                 sha256=digest.split(":", 1)[1], size=len(manifest), media_type=media_type or doc.get("mediaType")),
           Input(kind="oci", name=f"{name} config", version=version, url=f"{name}@{cfg['digest']}",
                 sha256=cfg["digest"].split(":", 1)[1], size=cfg["size"], media_type=cfg["mediaType"])]
    for n, layer in enumerate(doc.get("layers", [])):
        out.append(Input(kind="oci", name=f"{name} layer {n + 1}", version=version, url=f"{name}@{layer['digest']}",
                         sha256=layer["digest"].split(":", 1)[1], size=layer["size"], media_type=layer["mediaType"],
                         diff_id=diff_ids[n] if n < len(diff_ids) else None))
    return out


def config_of(config: bytes, *, image: str) -> ImageConfig:
    """The image config a child inherits from its parent's OCI config (what `docker run` uses)."""
    try:
        c = json.loads(config).get("config") or {}
        env = dict(e.split("=", 1) for e in c.get("Env") or [] if "=" in e)
        return ImageConfig(user=c.get("User") or "0", workdir=c.get("WorkingDir") or "/", env=env,
                           entrypoint=c.get("Entrypoint") or None, cmd=c.get("Cmd") or None,
                           labels=dict(c.get("Labels") or {}))
    except (ValueError, AttributeError, TypeError) as e:
        raise LockError(f"the parent's image config cannot be inherited: {str(e).splitlines()[0][:200]}", image=image,
                        fix="derive from an image whose config is an OCI image config") from None


def from_matrix(parent: Definition, parent_raw: bytes, manifest: bytes, config: bytes) -> ParentPins:
    """A matrix parent, built here: its blobs by digest, its config, and what its definition installed."""
    digest = "sha256:" + sha256_hex(manifest)
    rec = matrix_record(parent, parent_raw, digest, config_of(config, image=parent.image.alias))
    return ParentPins(base=layer_inputs(f"enginefab/{parent.image.alias}", parent.image.engine_version, digest,
                                        manifest, None, config), parent=rec)


def matrix_record(parent: Definition, parent_raw: bytes, manifest: str, config: ImageConfig) -> Parent:
    """The child's record of a matrix parent: what its definition installed (wheels and sdists,
    Debian packages, its own parent's), its config, its definition's sha256. Pure: `lock --check`
    compares a committed record with it."""
    dists = dict(parent.parent.distributions) if parent.parent else {}
    debs = set(parent.parent.debs) if parent.parent else set()
    for layer in parent.layers:
        prefix = layer.id.partition("/")[0]
        for i in layer.inputs:
            if i.kind == "wheel" or (i.kind == "url" and prefix in ("compile", "build")):
                dists[canonicalize_name(i.name)] = i.version
        debs |= deb.provided_names([i for i in layer.inputs if i.kind == "deb"])
    return Parent(alias=parent.image.alias, manifest=manifest, definition="sha256:" + sha256_hex(parent_raw),
                  config=config, distributions=dict(sorted(dists.items())), debs=sorted(debs))


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
