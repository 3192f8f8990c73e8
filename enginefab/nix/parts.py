"""The JSON the flake's derivations hand to enginefab, as typed records (nix/layer.nix, nix/image.nix).

A *part* is one blob an image is made of, as Nix provides it:

    {"layer": "/nix/store/…-layer-<id>"}              a layer derivation's output: `blob` + `descriptor.json`
    {"blob": "/nix/store/…", "digest": "sha256:…",     a base-image layer: its fixed-output fetch
     "mediaType": "…"}
    {"missing": "/nix/store/…-unresolved-base-…"}      a base whose layers were never resolved; its
                                                       derivation fails first, so this is never read

A layer derivation gets the parts below it (run steps only) in `lower`; the image derivation gets
every part of the image in `layers`. The descriptor a layer derivation writes is the action-cache
entry the CLI's store records for the same layer, plus its key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from enginefab.assemble.image import LayerDesc
from enginefab.core.errors import BuildError

BLOB = "blob"
DESCRIPTOR = "descriptor.json"
FIX = "build through the flake (nix/layer.nix, nix/image.nix)"


@dataclass(frozen=True)
class Part:
    """One blob of an image: where Nix put it, its digest and media type, and the key it
    contributes to the run steps above it (a built layer's action key, a base blob's digest)."""

    path: Path  # the blob file
    digest: str
    media_type: str
    key: str
    entry: dict | None = None  # built layers: the descriptor (action-cache entry)

    def desc(self) -> LayerDesc:
        """As the run-step builder sees a lower layer (only digest and media type matter)."""
        return LayerDesc(self.media_type, self.digest, 0, "", "")


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise BuildError(f"cannot read {what} {path}: {e}", fix=FIX) from None


def read_inputs(path: Path) -> dict[str, Path]:
    """The {sha256: store path} map of a derivation's fixed-output fetches."""
    raw = _read_json(path, "the input map")
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise BuildError(f"{path} is not a JSON object of store paths", fix=FIX)
    return {k: Path(v) for k, v in raw.items()}


def read_descriptor(out: Path) -> dict:
    entry = _read_json(out / DESCRIPTOR, "the layer descriptor")
    if not isinstance(entry, dict) or not {"digest", "media_type", "key"} <= set(entry):
        raise BuildError(f"{out / DESCRIPTOR} is not a layer descriptor", fix=FIX)
    return entry


def part(raw: dict) -> Part:
    if not isinstance(raw, dict):
        raise BuildError(f"not a layer part: {raw!r}", fix=FIX)
    if "layer" in raw:
        out = Path(raw["layer"])
        entry = read_descriptor(out)
        return Part(out / BLOB, entry["digest"], entry["media_type"], entry["key"], entry)
    if "blob" in raw:
        return Part(Path(raw["blob"]), raw["digest"], raw["mediaType"], raw["digest"])
    if "missing" in raw:
        raise BuildError(f"a base image layer was never resolved ({raw['missing']})",
                         fix="run `enginefab lock` where the base's registry is reachable")
    raise BuildError(f"not a layer part: {raw!r}", fix=FIX)


def read_parts(path: Path) -> list[Part]:
    raw = _read_json(path, "the layer list")
    if not isinstance(raw, list):
        raise BuildError(f"{path} is not a JSON list of layer parts", fix=FIX)
    return [part(r) for r in raw]
