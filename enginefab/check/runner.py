"""Run the check levels for each image and collect one report per image.

* definition: the rules (matrix + engines/checks/compat.toml) and the locked rules (build/*.json);
* static: the built image's files and config (ELF, glibc, sonames, wheels, conventions), the
  per-engine file and metadata tests, and the real container-structure-test as a cross-check;
  an image that cannot be built here gets its reachable engine layers audited instead;
* runtime: the engine probe and the per-engine command tests, in the sandbox; a model image
  served and health-checked as ModelArts would (`serving`);
* accelerator: device tests where the hardware is, "skipped" with the reason elsewhere.
"""

from __future__ import annotations

import time
from pathlib import Path

from enginefab.assemble import rootfs, sandbox
from enginefab.assemble.builder import Builder
from enginefab.assemble.image import Built
from enginefab.assemble.pipeline import definition_for, matrix_parents
from enginefab.assemble.store import Store
from enginefab.check import accelerator, cst, definition, podman, runtime, serving, static, structure
from enginefab.check.facts import Facts
from enginefab.check.layers import audit_layers
from enginefab.check.report import LEVELS, Report, Result
from enginefab.core.definition import Definition
from enginefab.core.errors import CheckError, EnginefabError
from enginefab.core.reporter import SILENT, Reporter
from enginefab.engines.matrix import Image, Matrix
from enginefab.transport.session import Session


def _levels(levels: list[str] | None) -> list[str]:
    levels = levels or list(LEVELS)
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad:
        raise CheckError(f"unknown check level {bad[0]!r}", fix=f"use {', '.join(LEVELS)}")
    return levels


def check_built(defn: Definition, store: Store, built: Built, project: Path, *, levels: list[str] | None = None,
                cross_check: bool = False, reporter: Reporter = SILENT) -> list[Result]:
    """Static and runtime levels of one built image (any definition, also one made by a test)."""
    levels = _levels(levels)
    suite = structure.load(project, defn)
    out: list[Result] = []
    own = f"engines/checks/{defn.image.engine}.yaml"
    if own not in suite.sources and any(lv in levels for lv in ("static", "runtime")):
        out.append(Result("static" if "static" in levels else "runtime", "checks-file", "warn",
                          f"{own} does not exist: only common.yaml's checks ran for {defn.image.engine} (no file "
                          "tests of its own, no builtFor, no accelerator tests); add it (engines/checks/pytorch.yaml "
                          "is an example)"))
    if "static" in levels:
        t0 = time.monotonic()
        root = rootfs.unpacked(store, built)
        reporter.info(f"  unpacked in {time.monotonic() - t0:.1f} s; auditing files")
        out += static.audit(root, Facts.of(defn, suite))
        out += structure.file_tests(root, suite) + structure.metadata_tests(defn, suite)
        if cross_check:
            out += cst.run(store, built, suite)
    if "runtime" in levels:
        missing = sandbox.available(defn.image.arch)
        if missing:
            out.append(Result("runtime", "sandbox", "error", f"missing: {', '.join(missing)}"))
        else:
            root = rootfs.unpacked(store, built)
            reporter.info("  running the engine probe" + (" under qemu-user" if defn.image.arch != sandbox.host_arch() else ""))
            out += runtime.check(defn, root, suite=suite, logs=store.root / "logs")
            out += structure.command_tests(root, defn, suite)
            if defn.image.kind == "model":
                reporter.info("  serving the model as ModelArts would (uid 1000, port 8080, GET /health)")
                out += serving.check(defn, root)
            if cross_check:
                reporter.info("  cross-checking the engine probe with podman (runc)")
                out += podman.cross_check(store, built, defn, root, suite)
    return out


def accelerator_here(img: Image) -> bool:
    return img.accelerator != "cpu" and not (accelerator.gpu_present() if img.accelerator == "cuda"
                                             else accelerator.npu_present())


def run_checks(m: Matrix, imgs: list[Image], store: Store, session: Session, *, levels: list[str] | None = None,
               cross_check: bool = False) -> list[Report]:
    """One report per image; what a level needs is fetched through `session` (its reporter says
    what runs)."""
    levels = _levels(levels)
    reports = []
    builder = Builder(store, session=session, parents=matrix_parents(m))
    say = session.reporter.info
    for img in imgs:
        say(f"[bold]check[/] {img.label()}")
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
            rep.results += check_built(defn, store, built, m.root, levels=levels, cross_check=cross_check,
                                       reporter=session.reporter)
        elif needs_image:
            if "static" in levels:
                if defn is not None:
                    say(f"  the image cannot be built here ({why}); auditing its reachable engine layers")
                    rep.results.append(Result("static", "image", "skip", f"the whole image cannot be built here: {why}"))
                    rep.results += audit_layers(defn, store, m.root, session, structure.load(m.root, defn))
                else:
                    rep.results.append(Result("static", "image", "error", f"no definition to audit: {why}"))
            if "runtime" in levels:
                rep.results.append(Result("runtime", "image", "skip", f"skipped: the image cannot be built here: {why}"))
        if "accelerator" in levels:
            if built is not None and defn is not None:
                rep.results += accelerator.check(img, defn=defn, rootfs=rootfs.unpacked(store, built) if accelerator_here(img)
                                                 else None, suite=structure.load(m.root, defn))
            else:
                rep.results += accelerator.check(img)
        rep.checks = structure.sources(m.root, img)
        reports.append(rep)
    return reports
