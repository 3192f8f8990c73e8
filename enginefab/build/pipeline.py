"""`enginefab build`: definitions → store → one OCI layout holding every image built."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from enginefab import ui
from enginefab.build.builder import Builder, report
from enginefab.build.image import Built, write_layout
from enginefab.build.store import Store
from enginefab.engines.matrix import Image, Matrix
from enginefab.errors import BuildError
from enginefab.lock.definition import Definition, load_definition
from enginefab.lock.locker import definition_path, matrix_entry


@dataclass
class BuildResult:
    alias: str
    name: str
    digest: str
    layers: int
    built: int
    cached: int
    seconds: float
    layout: str

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def definition_for(m: Matrix, img: Image) -> Definition:
    defn = load_definition(definition_path(m.root, img.alias))
    if defn.matrix != matrix_entry(img, m):
        raise BuildError(
            f"build/{img.alias}.json is stale: engines/ changed since it was locked",
            image=img.alias,
            fix=f"run `enginefab lock {img.alias}` (and review the diff), or `enginefab lock --check` for details",
        )
    return defn


def build_images(m: Matrix, imgs: list[Image], store: Store, out: Path) -> list[BuildResult]:
    builder = Builder(store)
    results = []
    built: list[Built] = []
    for img in imgs:
        defn = definition_for(m, img)
        t0 = time.monotonic()
        before = (builder.stats.layers_built, builder.stats.layers_cached)
        ui.info(f"[bold]build[/] {img.label()}")
        b = builder.image(defn)
        built.append(b)
        write_layout(out, [b], store.blob_path)
        results.append(BuildResult(
            alias=img.alias, name=img.name, digest=b.digest, layers=len(b.blobs) - 1,
            built=builder.stats.layers_built - before[0], cached=builder.stats.layers_cached - before[1],
            seconds=round(time.monotonic() - t0, 3), layout=str(out),
        ))
    report(builder.stats)
    return results
