"""Run the check levels for each image and collect one report per image.

* definition: the rules (matrix + engines/checks/compat.toml) and the locked rules (build/*.json);
* static: the built image's files and config (ELF, glibc, sonames, wheels, conventions), the
  per-engine file and metadata tests, and the real container-structure-test as a cross-check;
  an image that cannot be built here gets its reachable engine layers audited instead;
* runtime: the engine probe and the per-engine command tests, in the sandbox;
* accelerator: device tests where the hardware is, "skipped" with the reason elsewhere.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from enginefab.assemble import rootfs, sandbox
from enginefab.assemble.builder import Builder
from enginefab.assemble.image import Built
from enginefab.assemble.store import Store
from enginefab.check import accelerator, cst, definition, runtime, structure
from enginefab.check.report import LEVELS, Report, Result
from enginefab.core import ui
from enginefab.core.definition import Definition
from enginefab.core.errors import CheckError, EnginefabError
from enginefab.engines.matrix import Image, Matrix


def unpacked(store: Store, built: Built) -> Path:
    """The image's rootfs, unpacked once per manifest digest under the store.

    When another image's rootfs holds exactly this image's lower layers (a variant with layers
    added on top), it is copied with hard links and only the rest is applied: replaced files are
    unlinked first, never written through, so the other rootfs is untouched."""
    root = store.root / "rootfs" / built.digest.split(":", 1)[1]
    done = root.with_name(root.name + ".complete")
    if done.exists() and root.is_dir():
        return root
    if root.exists():  # an interrupted unpack
        shutil.rmtree(root)
    layers = [(d["digest"], d["mediaType"]) for d in json.loads(built.manifest)["layers"]]
    base, n = _lower(store, [d for d, _ in layers])
    if base is not None and subprocess.run(["cp", "-al", str(base), str(root)], capture_output=True).returncode == 0:
        for digest, mt in layers[n:]:
            rootfs.apply_layer(root, store.blob_path(digest), mt)
    else:
        shutil.rmtree(root, ignore_errors=True)
        rootfs.unpack(root, [(store.blob_path(d), mt) for d, mt in layers])
    done.write_text(json.dumps([d for d, _ in layers]))
    return root


def _lower(store: Store, layers: list[str]) -> tuple[Path | None, int]:
    """The unpacked rootfs whose layers are the longest proper prefix of `layers`."""
    best, n = None, 0
    for marker in (store.root / "rootfs").glob("*.complete"):
        try:
            theirs = json.loads(marker.read_text() or "null")
        except ValueError:
            continue
        if isinstance(theirs, list) and n < len(theirs) < len(layers) and layers[:len(theirs)] == theirs:
            best, n = marker.with_name(marker.name[: -len(".complete")]), len(theirs)
    return best, n


def drop_unpacked(store: Store) -> None:
    shutil.rmtree(store.root / "rootfs", ignore_errors=True)


def _levels(levels: list[str] | None) -> list[str]:
    levels = levels or list(LEVELS)
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad:
        raise CheckError(f"unknown check level {bad[0]!r}", fix=f"use {', '.join(LEVELS)}")
    return levels


def check_built(defn: Definition, store: Store, built: Built, project: Path, *, levels: list[str] | None = None,
                cross_check: bool = False) -> list[Result]:
    """Static and runtime levels of one built image (any definition, also one made by a test)."""
    levels = _levels(levels)
    suite = structure.load(project, defn)
    out: list[Result] = []
    if "static" in levels:
        from enginefab.check import static

        t0 = time.monotonic()
        root = unpacked(store, built)
        ui.info(f"  unpacked in {time.monotonic() - t0:.1f} s; auditing files")
        out += static.audit(root, static.Facts.of(defn, suite))
        out += structure.file_tests(root, suite) + structure.metadata_tests(defn, suite)
        if cross_check:
            out += cst.run(store, built, suite)
    if "runtime" in levels:
        missing = sandbox.available()
        if missing:
            out.append(Result("runtime", "sandbox", "error", f"missing: {', '.join(missing)}"))
        else:
            root = unpacked(store, built)
            ui.info("  running the engine probe" + (" under qemu-user" if defn.image.arch != sandbox.host_arch() else ""))
            out += runtime.check(defn, root, suite=suite)
            out += structure.command_tests(root, defn, suite)
    return out


def accelerator_here(img: Image) -> bool:
    return img.accelerator != "cpu" and not (accelerator.gpu_present() if img.accelerator == "cuda"
                                             else accelerator.npu_present())


def run_checks(m: Matrix, imgs: list[Image], store: Store, *, levels: list[str] | None = None,
               cross_check: bool = False) -> list[Report]:
    levels = _levels(levels)
    from enginefab.assemble.pipeline import definition_for

    reports = []
    builder = Builder(store)
    for img in imgs:
        ui.info(f"[bold]check[/] {img.label()}")
        rep = Report(image=img.alias, name=img.name, digest=None)
        if "definition" in levels:
            rep.results += definition.check(m, img)
        needs_image = any(lv in levels for lv in ("static", "runtime"))
        defn: Definition | None = None
        built = None
        why = ""
        if needs_image:
            try:
                defn = definition_for(m, img)
                built = builder.image(defn)
                rep.digest = built.digest
            except EnginefabError as e:
                why = e.message
        if built is not None and defn is not None:
            rep.results += check_built(defn, store, built, m.root, levels=levels, cross_check=cross_check)
        elif needs_image:
            if "static" in levels:
                if defn is not None:
                    from enginefab.check.layers import audit_layers

                    ui.info(f"  the image cannot be built here ({why}); auditing its reachable engine layers")
                    rep.results.append(Result("static", "image", "skip", f"the whole image cannot be built here: {why}"))
                    rep.results += audit_layers(defn, store, m.root, structure.load(m.root, defn))
                else:
                    rep.results.append(Result("static", "image", "error", f"no definition to audit: {why}"))
            if "runtime" in levels:
                rep.results.append(Result("runtime", "image", "skip", f"skipped: the image cannot be built here: {why}"))
        if "accelerator" in levels:
            if built is not None and defn is not None:
                rep.results += accelerator.check(img, defn=defn, rootfs=unpacked(store, built) if accelerator_here(img)
                                                 else None, suite=structure.load(m.root, defn))
            else:
                rep.results += accelerator.check(img)
        rep.checks = structure.sources(m.root, img)
        reports.append(rep)
    return reports
