"""Resolve a base image pinned by digest into the blobs the build reuses byte for byte.

The pin itself (reference + digest) comes from engines/ and is never changed here. When the
registry (or its mirror) answers, the digest is followed — an index to the platform's manifest,
the manifest to its config and layers — and each blob becomes an `oci` input with its digest,
size, media type and diff_id. When it does not answer, the lock keeps the reference pinned by
digest alone and says so; building that image then needs the registry or a mirror.
"""

from __future__ import annotations

import json

from enginefab.core.definition import Input
from enginefab.core.errors import EnginefabError, LockError
from enginefab.engines.model import OciRef
from enginefab.transport.client import RegistryClient
from enginefab.transport.mirrors import Mirrors
from enginefab.transport.reference import Reference, parse_reference
from enginefab.transport.session import Session

INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")


def _ref_input(ref: OciRef) -> Input:
    name, _, tag = ref.reference.rpartition(":")
    if "/" in tag:  # no tag, a port
        name, tag = ref.reference, "latest"
    return Input(kind="oci", name=name, version=tag, url=f"{name}@{ref.digest}", sha256=ref.digest.split(":", 1)[1],
                 size=0, media_type=None)


def mirrored(ref, mirrors: Mirrors):
    """The same reference on its mirror (registry/mirrors.toml [registries]), if one is configured."""
    host = mirrors.registry(ref.registry)
    if host == ref.registry:
        return ref
    repo = ref.repository
    if "/" in host:  # host/prefix: the mirror keeps repositories under a path prefix
        host, prefix = host.split("/", 1)
        repo = f"{prefix.strip('/')}/{repo}"
    return Reference(host, repo, ref.tag, ref.digest)


def resolve(ref: OciRef, platform: dict[str, str], *, image: str, session: Session) -> tuple[list[Input], str | None]:
    """(inputs, platform manifest digest) for a pinned base; the inputs start with the reference."""
    head = _ref_input(ref)
    upstream = parse_reference(f"{head.name}@{ref.digest}")
    r = mirrored(upstream, session.mirrors)
    try:
        client = RegistryClient.for_reference(r, options=session.http_options, env=session.environ)
        raw, mt = client.get_manifest_raw(r.repository, ref.digest)
    except EnginefabError as e:
        via = f" (through the mirror {r.registry})" if r.registry != upstream.registry else ""
        session.reporter.warn(f"{ref.reference}: registry not reachable{via} ({e.message.splitlines()[0]}); "
                              "the base stays pinned by digest only")
        return [head], None
    doc = json.loads(raw)
    head = head.model_copy(update={"size": len(raw)})
    manifest_digest = ref.digest
    if mt in INDEX_TYPES or "manifests" in doc:
        want = (platform["os"], platform["architecture"], platform.get("variant"))
        chosen = None
        for m in doc.get("manifests", []):
            p = m.get("platform", {})
            if (p.get("os"), p.get("architecture")) == want[:2] and (want[2] is None or p.get("variant") in (None, want[2])):
                chosen = m
                break
        if chosen is None:
            raise LockError(f"{ref.reference}@{ref.digest} has no manifest for {'/'.join(x for x in want if x)}",
                            image=image, fix="pin a base image that is built for this platform")
        manifest_digest = chosen["digest"]
        raw, mt = client.get_manifest_raw(r.repository, manifest_digest)
        doc = json.loads(raw)
    cfg = doc["config"]
    cfg_raw = client.get_blob_bytes(r.repository, cfg["digest"], size=cfg["size"])
    config = json.loads(cfg_raw)
    diff_ids = config.get("rootfs", {}).get("diff_ids", [])
    inputs = [head,
              Input(kind="oci", name=f"{head.name} manifest", version=head.version, url=f"{head.name}@{manifest_digest}",
                    sha256=manifest_digest.split(":", 1)[1], size=len(raw), media_type=mt or doc.get("mediaType")),
              Input(kind="oci", name=f"{head.name} config", version=head.version, url=f"{head.name}@{cfg['digest']}",
                    sha256=cfg["digest"].split(":", 1)[1], size=cfg["size"], media_type=cfg["mediaType"])]
    for i, layer in enumerate(doc["layers"]):
        inputs.append(Input(kind="oci", name=f"{head.name} layer {i + 1}", version=head.version,
                            url=f"{head.name}@{layer['digest']}", sha256=layer["digest"].split(":", 1)[1],
                            size=layer["size"], media_type=layer["mediaType"],
                            diff_id=diff_ids[i] if i < len(diff_ids) else None))
    return inputs, manifest_digest
