"""`enginefab release --dry-run`: what a release would build and push, without building, checking
or writing to the registry (it only reads: the store's action cache, HEAD requests, the referrers
list).

Per image: the layers the store lacks (they would be packed); when it lacks none, the image's
digest, the blobs the registry lacks (count and bytes) and the tags and referrers it lacks. An
image not built yet has no digest before its layers are packed: everything of it would be pushed.
The check report is attached after the checks run, so it is not counted here.
"""

from __future__ import annotations

import json

from enginefab.assemble.builder import Builder
from enginefab.assemble.keys import chain_keys, is_layer_media
from enginefab.assemble.store import Store
from enginefab.core.definition import Definition
from enginefab.core.settings import Settings
from enginefab.engines.matrix import Image, Matrix
from enginefab.publish.publish import connect
from enginefab.release.plan import plan_image
from enginefab.release.state import missing
from enginefab.transport.client import RegistryClient
from enginefab.transport.session import Session


def layers_to_build(defn: Definition, store: Store) -> list[dict]:
    """Every layer of `defn` with whether the store has it (`cached`)."""
    out = []
    for layer, key in zip(defn.layers, chain_keys(defn)):
        if layer.kind == "base":
            have = all(store.has("sha256:" + (i.sha256 or "")) for i in layer.inputs if is_layer_media(i.media_type))
        else:
            have = store.action_get(key) is not None
        out.append({"id": layer.id, "kind": layer.kind, "cached": have})
    return out


def _push_plan(client: RegistryClient, prefix: str, img: Image, defn: Definition, store: Store,
               tag: str | None, session: Session, builder_id: str) -> dict:
    b = Builder(store, session=session).image(defn)  # every layer is in the store: no packing, no fetching
    planned = plan_image(img, defn, b, prefix, None, tag, builder_id)
    doc = json.loads(b.manifest)
    blobs = [doc["config"], *doc["layers"]]
    absent = [d for d in blobs if not client.has_blob(planned.repository, d["digest"])]
    return {"digest": b.digest, "repository": planned.repository, "tags": list(planned.tags),
            "blobs_missing": len(absent), "bytes_missing": sum(d["size"] for d in absent),
            "missing": missing(client, [planned], [])}


def dry_run(m: Matrix, imgs: list[Image], defns: dict[str, Definition], store: Store, to: str, opts,
            settings: Settings, session: Session) -> list[dict]:
    target, client = connect(to, m.root, settings.environ, plain_http=opts.plain_http, ca_cert=opts.ca_cert,
                             options=settings.http)
    out = []
    for img in imgs:
        defn = defns[img.alias]
        layers = layers_to_build(defn, store)
        row = {"alias": img.alias, "name": img.name, "layers": len(layers),
               "to_build": [la["id"] for la in layers if not la["cached"]]}
        if row["to_build"]:
            row["push"] = None
        else:
            row["push"] = _push_plan(client, target.prefix, img, defn, store, opts.tag, session, settings.builder_id)
        out.append(row)
    return out


def lines(plan: list[dict], to: str) -> list[str]:
    """What a person reads: one paragraph per image."""
    out = []
    for row in plan:
        build = (f"build {len(row['to_build'])} of {row['layers']} layers: {', '.join(row['to_build'])}"
                 if row["to_build"] else f"built ({row['layers']} layers in the store)")
        out.append(f"{row['alias']}: {build}")
        p = row["push"]
        if p is None:
            out.append(f"  push: everything (its digest is known once built) → {to}")
        elif not p["missing"] and not p["blobs_missing"]:
            out.append(f"  push: nothing, {p['repository']} has {p['digest']} and its tags and referrers")
        else:
            out.append(f"  push {p['digest']}: {p['blobs_missing']} blobs ({p['bytes_missing']} bytes) missing")
            out += [f"    {x}" for x in p["missing"]]
    return out
