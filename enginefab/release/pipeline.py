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
from enginefab.assemble.image import Built
from enginefab.assemble.index import Member, index_tag, plan_indexes
from enginefab.assemble.pipeline import BuildOptions, build_images, definition_for, matrix_parents
from enginefab.assemble.remote import SharedCache
from enginefab.assemble.store import Store
from enginefab.check.report import write_reports
from enginefab.check.runner import run_checks
from enginefab.core.definition import Definition
from enginefab.core.fsutil import write_atomic
from enginefab.core.settings import Settings
from enginefab.engines.matrix import Image, Matrix
from enginefab.lock import check as lock_check
from enginefab.publish.publish import connect, publish, published_members
from enginefab.publish.targets import Target
from enginefab.release import history
from enginefab.release.dryrun import dry_run
from enginefab.release.notes import markdown
from enginefab.release.page import html as page_html
from enginefab.release.plan import (PlannedImage, PlannedIndex, check_release_tag, lock_digest, plan_image,
                                    plan_index)
from enginefab.release.state import missing
from enginefab.release.summary import Subject, document
from enginefab.transport.client import RegistryClient
from enginefab.transport.session import Session


@dataclass
class Release:
    """What a release did: `stage` is the last stage it ran; `ok` whether that stage passed.

    `record()` is the release itself (a function of the lock, the check results, the target and
    the release tag); what this run did to get there — published or not, bytes uploaded,
    seconds, the dry-run plan — is in `as_dict()` only."""

    stage: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    indexes: list[dict] = field(default_factory=list)
    checks: dict[str, dict[str, int]] = field(default_factory=dict)
    lock: str | None = None
    tag: str | None = None
    # this run only
    published: bool | None = None
    pending: list[str] = field(default_factory=list)
    push_stats: dict = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    dry_run: list[dict] | None = None
    files: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"stage": self.stage, "ok": self.ok, "problems": self.problems, "images": self.images,
                "indexes": self.indexes, "checks": self.checks, "lock": self.lock, "tag": self.tag,
                "published": self.published, "pending": self.pending, "push": self.push_stats,
                "seconds": self.seconds, "dry_run": self.dry_run, "files": self.files}

    def record(self) -> bytes:
        """Canonical JSON of the release (sorted keys, no spaces, trailing newline): two releases
        of the same lock give the same bytes."""
        d = {k: getattr(self, k) for k in ("stage", "ok", "problems", "images", "indexes", "checks", "lock", "tag")}
        return json.dumps(d, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _failures(reports) -> list[str]:
    return [f"{r.image}: {res.level} {res.name}: {res.detail}"
            for r in reports for res in r.results if res.status in ("fail", "error")]


def _builder(store: Store, settings: Settings, session: Session, parents=None) -> Builder:
    return Builder(store, session=session, limits=settings.archive, threads=settings.threads,
                   run_timeout=settings.run_timeout, parents=parents)


def _publish(client: RegistryClient, target: Target, m: Matrix, built: list, store: Store, settings: Settings,
             session: Session, **kw) -> dict:
    return publish(client, target, m, built, store, blob_homes=settings.blob_homes, builder_id=settings.builder_id,
                   reporter=session.reporter, **kw)


def push(m: Matrix, imgs: list[Image], store: Store, to: str, settings: Settings, session: Session, *,
         plain_http: bool = False, ca_cert: str | None = None, parallel: int = 4, referrers: bool = True,
         indexes: bool = True, reports: Path | None = None, run_check: bool = False,
         check_reports: dict[str, bytes] | None = None) -> dict:
    """`enginefab push`: log in to `to` (a wrong password fails before anything is built), build
    each image (a cache hit when already built), with `run_check` check them and attach the
    reports, then publish."""
    target, client = connect(to, m.root, settings.environ, plain_http=plain_http, ca_cert=ca_cert, options=settings.http)
    builder = _builder(store, settings, session, matrix_parents(m))
    built = []
    for img in imgs:
        defn = definition_for(m, img)
        built.append((img, defn, builder.image(defn)))
    reps = dict(check_reports or {})
    if referrers and run_check:
        reps.update({r.image: r.to_json() for r in run_checks(m, imgs, store, session)})
    return _publish(client, target, m, built, store, settings, session, parallel=parallel, referrers=referrers,
                    indexes=indexes, reports=reports, check_reports=reps)


@dataclass(frozen=True)
class Options:
    """How to release: the registry connection, the gating check levels, where the notes go."""

    plain_http: bool = False
    ca_cert: str | None = None
    levels: list[str] | None = None
    reports_dir: Path | None = None
    record: Path | None = None
    notes_dir: Path | None = None  # NOTES.md, index.html, record.json, lock/, since/ (history.py)
    since: str | None = None  # the previous lock (@REV, a checkout, a directory of definitions)
    tag: str | None = None  # the release tag
    dry_run: bool = False
    shared: SharedCache | None = None  # the registry action cache (--cache)


def release(m: Matrix, imgs: list[Image], store: Store, out: Path, to: str, settings: Settings, session: Session,
            opts: Options = Options()) -> Release:
    """Each stage gated on the one before; the settings say how (limits, threads, timeouts,
    credentials, the builder's identity), the session fetches and reports."""
    say = session.reporter.info
    rel = Release(stage="lock", ok=False, tag=opts.tag)
    clock = time.monotonic()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.monotonic()
        rel.seconds[stage] = round(now - clock, 3)
        clock = now

    say(f"[bold]1/4 lock --check[/]: {len(m.images)} images in the matrix, releasing {len(imgs)}")
    rel.problems, _ = lock_check.check(m)
    lap("lock")
    if rel.problems:
        return _done(rel, opts)
    defns = {img.alias: definition_for(m, img) for img in imgs}
    rel.lock = lock_digest(list(defns.values()))
    if opts.tag:
        check_release_tag(opts.tag, max([img.alias for img in imgs] + [index_tag(img) for img in imgs], key=len))
    if opts.dry_run:
        rel.stage, rel.ok = "dry-run", True
        rel.dry_run = dry_run(m, imgs, defns, store, to, opts, settings, session)
        return rel

    rel.stage = "build"
    say(f"[bold]2/4 build[/] into {out} (store {store.root})")
    build_images(m, imgs, store, out, session, shared=opts.shared, options=BuildOptions.of(settings))
    builder = _builder(store, settings, session, matrix_parents(m))
    built = [(img, defns[img.alias], builder.image(defns[img.alias])) for img in imgs]  # cache hits
    lap("build")
    rel.images = [{"alias": b.alias, "name": b.name, "digest": b.digest} for _, _, b in built]

    rel.stage = "check"
    say("[bold]3/4 check[/] (definition, static, runtime, accelerator)" if not opts.levels
        else f"[bold]3/4 check[/] ({', '.join(opts.levels)})")
    reports = run_checks(m, imgs, store, session, levels=opts.levels)
    lap("check")
    rel.checks = {r.image: r.counts() for r in reports}
    if opts.reports_dir is not None:
        write_reports(reports, opts.reports_dir)
    for r in reports:
        c = r.counts()
        say(f"  {r.image}: {c['pass']} passed, {c['warn']} warnings, {c['fail']} failed, {c['error']} errors, "
            f"{c['skip']} skipped")
    rel.problems = _failures(reports)
    if rel.problems:
        return _done(rel, opts)

    rel.stage = "push"
    report_json = {r.image: r.to_json() for r in reports}
    target, client = connect(to, m.root, settings.environ, plain_http=opts.plain_http, ca_cert=opts.ca_cert,
                             options=settings.http)
    images, indexes = _plan(client, target, m, built, report_json, opts.tag, settings.builder_id)
    rel.images = [p.as_dict(target.registry) for p in images]
    rel.indexes = [x.as_dict(target.registry) for x in indexes]
    rel.pending = missing(client, images, indexes)
    if not rel.pending:
        say(f"[bold]4/4 push[/]: already released — {target.registry} has every tag and referrer of this "
            "lock; nothing published")
        rel.published = False
    else:
        say(f"[bold]4/4 push[/] to {to}: {len(rel.pending)} tags or referrers missing")
        more = {p.image.alias: list(p.tags[2:]) for p in images} | {x.plan.tag: list(x.tags[1:]) for x in indexes}
        pushed = _publish(client, target, m, built, store, settings, session, check_reports=report_json, more_tags=more)
        rel.push_stats, rel.published = pushed["stats"], True
    lap("push")
    rel.ok = True
    if opts.notes_dir is not None:
        rel.files = write_notes(opts.notes_dir, m.root, defns, images, indexes, reports, rel, opts, target.registry)
        say(f"notes: {rel.files['notes']}, page: {rel.files['page']}")
    return _done(rel, opts)


def _done(rel: Release, opts: Options) -> Release:
    if opts.record is not None:
        opts.record.parent.mkdir(parents=True, exist_ok=True)
        opts.record.write_bytes(rel.record())
    return rel


def _plan(client: RegistryClient, target: Target, m: Matrix, built: list[tuple[Image, Definition, Built]],
          reports: dict[str, bytes], tag: str | None, builder_id: str) -> tuple[list[PlannedImage], list[PlannedIndex]]:
    images = [plan_image(img, defn, b, target.prefix, reports.get(img.alias), tag, builder_id) for img, defn, b in built]
    repo_of = {p.image.alias: p.repository for p in images}
    members = [(img, Member.of(img, b)) for img, _, b in built] + published_members(
        client, m, [img for img, _, _ in built], target.prefix, repo_of)
    plans, _ = plan_indexes(members)
    return images, [plan_index(p, repo_of[p.members[0].alias], tag) for p in plans]


def write_notes(notes_dir: Path, project: Path, defns: dict[str, Definition], images: list[PlannedImage],
                indexes: list[PlannedIndex], reports: list, rel: Release, opts: Options, host: str) -> dict[str, str]:
    """NOTES.md, index.html and record.json into `notes_dir`; the lock kept for the next release."""
    old = history.previous(notes_dir, defns, opts.since, project)
    by_alias = {r.image: json.loads(r.to_json()) for r in reports}
    published = {d["alias"]: d for d in rel.images}
    subjects = [Subject(p.defn, p.built, by_alias.get(p.image.alias), published[p.image.alias]) for p in images]
    doc = document(subjects, title=f"enginefab release {opts.tag or rel.lock[7:19]}", lock=rel.lock,
                   since=lock_digest(list(old.values())) if old else None, old=old,
                   registry=host, plain_http=opts.plain_http,
                   indexes=[x.as_dict(host) for x in indexes], release_tag=opts.tag)
    notes_dir.mkdir(parents=True, exist_ok=True)
    files = {"notes": notes_dir / "NOTES.md", "page": notes_dir / "index.html", "record": notes_dir / "record.json"}
    write_atomic(files["notes"], markdown(doc).encode())
    write_atomic(files["page"], page_html(doc).encode())
    write_atomic(files["record"], rel.record())
    history.remember(notes_dir, defns, old)
    return {k: str(v) for k, v in files.items()}
