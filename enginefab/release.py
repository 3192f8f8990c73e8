"""`enginefab release`: the whole pipeline for chosen images, each stage gated on the one before.

    lock --check → build → check → push (SBOM, provenance and this run's check reports attached)

A stale lock builds nothing; an image that fails a check is pushed nowhere, and neither is any
other image of the same release (a release is all or nothing, like `lock`). The result names the
stage it stopped at and why; with `record`, it is also written as canonical JSON.

`push` is the composition behind `enginefab push`: log in, build (a cache hit when built), check
when asked, then publish; the publish stage itself never builds or checks.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from enginefab.assemble.builder import Builder
from enginefab.assemble.limits import DEFAULT as DEFAULT_LIMITS
from enginefab.assemble.limits import ArchiveLimits
from enginefab.assemble.pipeline import build_images, definition_for
from enginefab.assemble.remote import SharedCache
from enginefab.assemble.store import Store
from enginefab.check.runner import run_checks
from enginefab.core import ui
from enginefab.engines.matrix import Image, Matrix
from enginefab.lock import check as lock_check
from enginefab.publish.publish import connect, publish


@dataclass
class Release:
    """What a release did: `stage` is the last stage it ran; `ok` whether that stage passed."""

    stage: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    indexes: list[dict] = field(default_factory=list)
    checks: dict[str, dict[str, int]] = field(default_factory=dict)
    push_stats: dict = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"stage": self.stage, "ok": self.ok, "problems": self.problems, "images": self.images,
                "indexes": self.indexes, "checks": self.checks, "push": self.push_stats,
                "seconds": self.seconds}

    def record(self) -> bytes:
        """Canonical JSON without timings (sorted keys, no spaces, trailing newline)."""
        d = {k: v for k, v in self.as_dict().items() if k != "seconds"}
        d["push"] = {k: v for k, v in self.push_stats.items() if k not in ("seconds", "bytes_per_second")}
        return json.dumps(d, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _failures(reports) -> list[str]:
    return [f"{r.image}: {res.level} {res.name}: {res.detail}"
            for r in reports for res in r.results if res.status in ("fail", "error")]


def push(m: Matrix, imgs: list[Image], store: Store, to: str, *, plain_http: bool = False,
         ca_cert: str | None = None, parallel: int = 4, referrers: bool = True, indexes: bool = True,
         reports: Path | None = None, run_check: bool = False,
         check_reports: dict[str, bytes] | None = None, limits: ArchiveLimits = DEFAULT_LIMITS) -> dict:
    """`enginefab push`: log in to `to` (a wrong password fails before anything is built), build
    each image (a cache hit when already built), with `run_check` check them and attach the
    reports, then publish."""
    target, client = connect(to, m.root, plain_http=plain_http, ca_cert=ca_cert)
    builder = Builder(store, limits=limits)
    built = []
    for img in imgs:
        defn = definition_for(m, img)
        built.append((img, defn, builder.image(defn)))
    reps = dict(check_reports or {})
    if referrers and run_check:
        reps.update({r.image: r.to_json() for r in run_checks(m, imgs, store)})
    return publish(client, target, m, built, store, parallel=parallel, referrers=referrers, indexes=indexes,
                   reports=reports, check_reports=reps)


def release(m: Matrix, imgs: list[Image], store: Store, out: Path, to: str, *, plain_http: bool = False,
            ca_cert: str | None = None, levels: list[str] | None = None, reports_dir: Path | None = None,
            record: Path | None = None, shared: SharedCache | None = None,
            limits: ArchiveLimits = DEFAULT_LIMITS) -> Release:
    rel = Release(stage="lock", ok=False)
    clock = time.monotonic()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.monotonic()
        rel.seconds[stage] = round(now - clock, 3)
        clock = now

    def done(r: Release) -> Release:
        if record is not None:
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_bytes(r.record())
        return r

    ui.info(f"[bold]1/4 lock --check[/]: {len(m.images)} images in the matrix, releasing {len(imgs)}")
    rel.problems, _ = lock_check.check(m)
    lap("lock")
    if rel.problems:
        return done(rel)

    rel.stage = "build"
    ui.info(f"[bold]2/4 build[/] into {out} (store {store.root})")
    built = build_images(m, imgs, store, out, shared=shared, limits=limits)
    lap("build")
    rel.images = [{"alias": b.alias, "name": b.name, "digest": b.digest} for b in built]

    rel.stage = "check"
    ui.info("[bold]3/4 check[/] (definition, static, runtime, accelerator)" if not levels
            else f"[bold]3/4 check[/] ({', '.join(levels)})")
    reports = run_checks(m, imgs, store, levels=levels)
    lap("check")
    rel.checks = {r.image: r.counts() for r in reports}
    if reports_dir is not None:
        reports_dir.mkdir(parents=True, exist_ok=True)
        for r in reports:
            (reports_dir / f"{r.image}.json").write_bytes(r.to_json())
    for r in reports:
        c = r.counts()
        ui.info(f"  {r.image}: {c['pass']} passed, {c['fail']} failed, {c['error']} errors, {c['skip']} skipped")
    rel.problems = _failures(reports)
    if rel.problems:
        return done(rel)

    rel.stage = "push"
    ui.info(f"[bold]4/4 push[/] to {to}")
    pushed = push(m, imgs, store, to, plain_http=plain_http, ca_cert=ca_cert,
                  check_reports={r.image: r.to_json() for r in reports}, limits=limits)
    lap("push")
    rel.images, rel.indexes, rel.push_stats = pushed["images"], pushed["indexes"], pushed["stats"]
    rel.ok = True
    return done(rel)
