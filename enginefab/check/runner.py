"""Run the check levels for each image and collect one report per image."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from enginefab import ui
from enginefab.build import rootfs, sandbox
from enginefab.build.builder import Builder
from enginefab.build.image import Built
from enginefab.build.store import Store
from enginefab.check import accelerator, definition, runtime
from enginefab.check.report import LEVELS, Report, Result
from enginefab.engines.matrix import Image, Matrix
from enginefab.errors import CheckError, EnginefabError
from enginefab.lock.definition import Definition


def unpacked(store: Store, built: Built) -> Path:
    """The image's rootfs, unpacked once per manifest digest under the store."""
    root = store.root / "rootfs" / built.digest.split(":", 1)[1]
    done = root.with_name(root.name + ".complete")
    if done.exists() and root.is_dir():
        return root
    doc = json.loads(built.manifest)
    rootfs.unpack(root, [(store.blob_path(d["digest"]), d["mediaType"]) for d in doc["layers"]])
    done.touch()
    return root


def drop_unpacked(store: Store) -> None:
    shutil.rmtree(store.root / "rootfs", ignore_errors=True)


def run_checks(m: Matrix, imgs: list[Image], store: Store, *, levels: list[str] | None = None) -> list[Report]:
    levels = levels or list(LEVELS)
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad:
        raise CheckError(f"unknown check level {bad[0]!r}", fix=f"use {', '.join(LEVELS)}")
    from enginefab.build.pipeline import definition_for

    reports = []
    builder = Builder(store)
    for img in imgs:
        ui.info(f"[bold]check[/] {img.label()}")
        rep = Report(image=img.alias, name=img.name, digest=None)
        if "definition" in levels:
            rep.results += definition.check(img)
        needs_image = any(lv in levels for lv in ("static", "runtime"))
        defn: Definition | None = None
        built = None
        if needs_image or "accelerator" in levels:
            try:
                defn = definition_for(m, img)
                if needs_image:
                    built = builder.image(defn)
                    rep.digest = built.digest
            except EnginefabError as e:
                for lv in ("static", "runtime"):
                    if lv in levels:
                        rep.results.append(Result(lv, "image", "error", f"cannot build the image here: {e.message}"))
                built = None
        if built is not None and defn is not None:
            if "static" in levels:
                from enginefab.check import static

                rep.results += static.check(defn, store, built)
            if "runtime" in levels:
                missing = sandbox.available()
                if missing:
                    rep.results.append(Result("runtime", "sandbox", "error", f"missing: {', '.join(missing)}"))
                else:
                    t0 = time.monotonic()
                    root = unpacked(store, built)
                    ui.info(f"  unpacked in {time.monotonic() - t0:.1f} s; running the engine probe"
                            + (" under qemu-user" if img.arch != sandbox.host_arch() else ""))
                    rep.results += runtime.check(defn, root)
        if "accelerator" in levels:
            rep.results += accelerator.check(img)
        reports.append(rep)
    return reports
