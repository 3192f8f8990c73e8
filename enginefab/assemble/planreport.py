"""`enginefab plan`: the matrix-wide layer plan as users see it — per layer, the images that use
it, its size, the bytes sharing saves; per image, its layer count and size; in total, the sum of
image sizes against the unique bytes a registry stores.

A layer is identified by its blob digest once built, else by its action-cache key
(`keys.chain_keys`), so two images share a layer exactly when the builder would give them the
same blob — and a derived image's parent layers (pinned by digest in its base layer) are the
parent's own rows. Sizes, best source first:

* ``built``: the compressed size recorded in the action cache of the store (exact);
* ``pinned``: a base image's blob size from the lock (exact);
* ``estimate``: not built yet — the sum of the input sizes (wheels, debs and archives are
  already compressed, so their sum is close to the layer's; a `files` layer is its contents);
* ``unknown``: a run step or an input awaiting a manual file, whose output size nothing predicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from enginefab.assemble.keys import chain_keys, is_layer_media
from enginefab.assemble.store import Store
from enginefab.core.definition import Definition, Layer
from enginefab.lock.layering import BUDGET


@dataclass
class PlannedLayer:
    id: str
    kind: str
    key: str
    size: int
    size_source: str  # built | pinned | estimate | unknown
    images: list[str] = field(default_factory=list)
    #: the definition's layer this row belongs to (a base layer has one row per blob)
    layer: str = ""

    @property
    def saves(self) -> int:
        return self.size * max(0, len(self.images) - 1)

    def as_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "key": self.key, "size": self.size, "size_source": self.size_source,
                "images": sorted(self.images), "saves": self.saves, "layer": self.layer or self.id}


def _estimate(layer: Layer) -> tuple[int, str]:
    if layer.kind == "files":
        return sum(len((f.content or "").encode()) for f in layer.files), "estimate"
    if layer.kind == "run" or any(i.sha256 is None or i.size == 0 for i in layer.inputs):
        return sum(i.size for i in layer.inputs if i.kind != "run"), "unknown"
    return sum(i.size for i in layer.inputs), "estimate"


def plan(defns: list[Definition], store: Store | None = None) -> dict:
    layers: dict[str, PlannedLayer] = {}
    images = []
    for defn in defns:
        alias = defn.image.alias
        mine: list[PlannedLayer] = []
        for layer, key in zip(defn.layers, chain_keys(defn)):
            if layer.kind == "base":
                blobs = [i for i in layer.inputs if is_layer_media(i.media_type)]
                if not blobs:  # base never resolved (registry unreachable when locking)
                    pl = layers.setdefault(key, PlannedLayer(layer.id, "base", key, 0, "unknown"))
                    mine.append(pl)
                for i in blobs:
                    k = "sha256:" + (i.sha256 or "")
                    mine.append(layers.setdefault(k, PlannedLayer(f"{layer.id} {i.name}", "base", k, i.size, "pinned",
                                                                 layer=layer.id)))
                continue
            hit = store.action_get(key) if store is not None else None
            if hit:  # by its blob: a derived image's parent layers (pinned by digest) are this very blob
                key = hit["digest"]
                pl = layers.get(key)
                if pl is None or pl.size_source == "pinned":
                    layers[key] = PlannedLayer(layer.id, layer.kind, key, hit["size"], "built",
                                               pl.images if pl else [])
            elif key not in layers:
                size, src = _estimate(layer)
                layers[key] = PlannedLayer(layer.id, layer.kind, key, size, src)
            mine.append(layers[key])
        mine = [layers[p.key] for p in mine]  # a pinned row replaced by the built one
        for pl in mine:
            if alias not in pl.images:
                pl.images.append(alias)
        images.append({"alias": alias, "layers": len(mine), "size": sum(p.size for p in mine),
                       "over_budget": len(mine) > BUDGET,
                       "unknown_layers": sum(p.size_source == "unknown" for p in mine)})
    rows = sorted(layers.values(), key=lambda p: (-p.saves, -len(p.images), -p.size, p.id))
    total = sum(i["size"] for i in images)
    unique = sum(p.size for p in rows)
    return {
        "layers": [p.as_dict() for p in rows],
        "images": images,
        "totals": {"images": len(images), "layers": len(rows), "sum_of_image_sizes": total, "unique_bytes": unique,
                   "saved_by_sharing": total - unique,
                   "shared_layers": sum(len(p.images) > 1 for p in rows),
                   "max_layers_per_image": max((i["layers"] for i in images), default=0), "budget": BUDGET,
                   "sizes": {s: sum(p.size_source == s for p in rows) for s in ("built", "pinned", "estimate", "unknown")}},
    }


def per_layer(rows: list[dict]) -> list[dict]:
    """The plan's rows with a base layer's blobs folded into one row per layer (`blobs`: how many;
    size and saves summed, images: every image using any of them), in the plan's order."""
    out: dict[str, dict] = {}
    for r in rows:
        g = out.get(r["layer"])
        if g is None:
            out[r["layer"]] = {**r, "id": r["layer"], "blobs": 1, "images": list(r["images"])}
            continue
        g["blobs"] += 1
        g["size"] += r["size"]
        g["saves"] += r["saves"]
        g["images"] = sorted(set(g["images"]) | set(r["images"]))
    return list(out.values())


def human(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)
