"""A derived image's record of its parent, pure: the child's base-layer inputs made from the
parent's manifest and config, the config it inherits, and — for a matrix parent — what the
parent's definition installed. `lock --check` compares a committed record with `matrix_record`
without reaching any registry (`lock/parent.py` reads registry parents)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from packaging.utils import canonicalize_name

from enginefab.core.canonical import sha256_hex
from enginefab.core.definition import Definition, ImageConfig, Input, Parent
from enginefab.core.errors import LockError
from enginefab.lock.debnames import provided_names


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
        debs |= provided_names([i for i in layer.inputs if i.kind == "deb"])
    return Parent(alias=parent.image.alias, manifest=manifest, definition="sha256:" + sha256_hex(parent_raw),
                  config=config, distributions=dict(sorted(dists.items())), debs=sorted(debs))
