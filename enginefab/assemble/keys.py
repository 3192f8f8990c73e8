"""Action-cache keys: pure functions from a definition to the key of each of its layers.

A layer's key is the sha256 of everything that determines its bytes: the builder version, the
layer object from the lock (its inputs with their sha256), the compression contract and
SOURCE_DATE_EPOCH. A run step's output also depends on the filesystem it runs over, so a `run`
layer's key includes the keys of every layer below it (base layers by their blob digests, an
unresolved base by its own key). Every key is known from the lock alone, before anything is
fetched or built: `plan` and `build --reachable-layers` use them to tell built from unbuilt
layers, and the flake names its layer derivations after the same inputs (nix/layer.nix).
"""

from __future__ import annotations

from enginefab.core import canonical
from enginefab.core.definition import Definition, Layer

#: bump when the bytes a layer builder writes for the same inputs change
BUILDER_VERSION = "enginefab-layers/1"
#: bump when what a run step runs in changes (its fixed environment, build directory, tools
#: overlay): only run layers' keys change, every other layer stays cached
RUN_VERSION = "enginefab-run/2"


def is_layer_media(mt: str | None) -> bool:
    return bool(mt) and (".layer." in mt or ".rootfs.diff." in mt)  # type: ignore[operator]


def layer_key(defn: Definition, layer: Layer, lower: list[str] | tuple[str, ...] = ()) -> str:
    obj = {
        "builder": BUILDER_VERSION,
        "layer": layer.model_dump(mode="json", exclude_none=True),
        "compression": defn.compression.model_dump(mode="json"),
        "source_date_epoch": defn.source_date_epoch,
    }
    if layer.kind == "run":
        obj["lower"] = list(lower)
        obj["run"] = RUN_VERSION
    return canonical.key_of(obj)


def base_keys(layer: Layer) -> list[str]:
    """A base layer stands for the registry's blobs: its keys are their digests."""
    return ["sha256:" + (i.sha256 or "") for i in layer.inputs if is_layer_media(i.media_type)]


def chain_keys(defn: Definition) -> list[str]:
    """The key of every layer of `defn`, in order (for a base layer: the key of its manifest
    input, the blobs themselves are content-addressed)."""
    keys: list[str] = []
    lower: list[str] = []
    for layer in defn.layers:
        if layer.kind == "base":
            blobs = base_keys(layer)
            keys.append(canonical.key_of({"base": blobs or [i.sha256 for i in layer.inputs]}))
            # a base whose layers were never resolved still decides what runs above it
            lower.extend(blobs or keys[-1:])
            continue
        k = layer_key(defn, layer, lower)
        keys.append(k)
        lower.append(k)
    return keys
