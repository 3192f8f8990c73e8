"""Run-step layers: scripts executed in the sandbox over the lower layers; their diff is the layer."""

from __future__ import annotations

from enginefab.errors import BuildError


def build_run_layer(builder, defn, layer, staging) -> None:
    raise BuildError(
        f"layer {layer.id} is a run step; run steps are not supported by this builder yet",
        image=defn.image.alias,
        fix="build this image's other layers with `enginefab build --layers`",
    )
