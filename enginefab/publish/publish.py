"""`enginefab push`: built images to REGISTRY/PREFIX/<engine>, in graph order across the whole push.

1. every image's blobs (HEAD-skipped, mounted from another repository of the registry when one
   has them, else streamed; in parallel), then its manifest by digest;
2. the multi-arch indexes over them (`index.py`), by digest;
3. the referrers of each image: SBOM, provenance, check report (`referrers.py`);
4. tags last: canonical name and alias per image, the index tag per index;
5. the registry is asked whether every tag and digest resolves to exactly what we pushed.

A push that dies anywhere before step 4 has created no tag; one that dies during step 4 has only
tags whose content is complete. Re-running it finishes the job and uploads only what is missing.

The images come built (release.push builds them and runs the checks whose reports are attached).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Mapping

from enginefab.assemble.image import INDEX, MANIFEST, Built, iso
from enginefab.assemble.index import Member, group_key, plan_indexes
from enginefab.assemble.store import Store
from enginefab.core import canonical
from enginefab.core.definition import Definition
from enginefab.core.errors import RegistryError
from enginefab.core.reporter import SILENT, Reporter
from enginefab.core.settings import DEFAULT_BUILDER
from enginefab.engines.matrix import Image, Matrix
from enginefab.publish import provenance, sbom
from enginefab.publish.push import BlobHome, PushStats, push_image_content, push_tags, verify
from enginefab.publish.referrers import REPORT_TYPE, Artifact, attach
from enginefab.publish.targets import Target, resolve_target
from enginefab.transport.client import RegistryClient
from enginefab.transport.options import DEFAULT, HttpOptions


def repository_for(prefix: str, img: Image) -> str:
    return f"{prefix}/{img.engine.name}" if prefix else img.engine.name


def published_members(client: RegistryClient, m: Matrix, pushing: list[Image], prefix: str,
                      repo_of: dict[str, str]) -> list[tuple[Image, Member]]:
    """The other arches of the engine versions being pushed, as the registry already has them
    under their canonical-name tag: so that an index is made even when each arch is pushed on
    its own (one CI runner per arch)."""
    keys = {group_key(img) for img in pushing}
    names = {img.alias for img in pushing}
    found = []
    for other in m.images:
        if other.alias in names or group_key(other) not in keys:
            continue
        repo = repository_for(prefix, other)
        if client.head_manifest(repo, other.name) is None:
            continue
        raw, mt = client.get_manifest_raw(repo, other.name)
        if mt != MANIFEST:
            continue
        found.append((other, Member(other.name, other.alias, canonical.digest(raw), len(raw), other.oci_platform)))
        repo_of[other.alias] = repo
    return found


def evidence(defn: Definition, digest: str, report: bytes | None, builder_id: str = DEFAULT_BUILDER) -> list[Artifact]:
    """The artifacts attached to an image: SBOM, provenance (naming `builder_id`), and the check
    report if any."""
    name = defn.image.alias
    arts = [Artifact(sbom.MEDIA_TYPE, sbom.spdx_json(defn), f"{name}.spdx.json"),
            Artifact(provenance.MEDIA_TYPE, provenance.statement_json(defn, digest, builder=builder_id),
                     f"{name}.intoto.json")]
    if report is not None:
        arts.append(Artifact(REPORT_TYPE, report, f"{name}.check.json", "application/json"))
    return arts


def load_report(reports: Path, img: Image, digest: str) -> bytes:
    """The check report `enginefab check --reports DIR` wrote for this image; it must be about
    the very manifest being pushed."""
    path = reports / f"{img.alias}.json" if reports.is_dir() else reports
    if not path.is_file():
        raise RegistryError(f"no check report for {img.alias} in {reports}", image=img.alias,
                            fix=f"run `enginefab check {img.alias} --reports {reports}` first, or push without --reports")
    raw = path.read_bytes()
    try:
        doc = json.loads(raw)
    except ValueError:
        raise RegistryError(f"{path} is not JSON", image=img.alias) from None
    if doc.get("image") != img.alias or doc.get("digest") != digest:
        raise RegistryError(f"{path} is the report of {doc.get('image')} {doc.get('digest')}, not of "
                            f"{img.alias} {digest}", image=img.alias,
                            fix=f"re-run `enginefab check {img.alias} --reports {reports}` on the image you push")
    return raw


def connect(to: str, root: Path, environ: Mapping[str, str], *, plain_http: bool = False, ca_cert: str | None = None,
            options: HttpOptions = DEFAULT) -> tuple[Target, RegistryClient]:
    """The push target `to` names (HOST/PREFIX or a target of registry/targets.toml) and a client
    logged in to it with the credentials `environ` leads to (the settings' environment): a wrong
    password fails here, before anything is built or pushed."""
    target = resolve_target(to, root, plain_http=plain_http, ca_cert=ca_cert)
    client = RegistryClient(target.registry, plain_http=target.plain_http, ca_cert=target.ca_cert,
                            credentials=target.credentials(environ), options=options, env=environ)
    client.check_login()
    return target, client


def publish(client: RegistryClient, target: Target, m: Matrix, built_images: list[tuple[Image, Definition, Built]],
            store: Store, *, parallel: int = 4, referrers: bool = True, indexes: bool = True,
            reports: Path | None = None, check_reports: dict[str, bytes] | None = None,
            more_tags: dict[str, list[str]] | None = None, blob_homes: Path | None = None,
            builder_id: str = DEFAULT_BUILDER, reporter: Reporter = SILENT) -> dict:
    """Push images already built into `store`: never builds or checks (release.push composes that).
    `check_reports`: alias → a check report of this very build, attached as a referrer.
    `more_tags`: an image's alias or an index's tag → tags to set besides the default ones.
    `blob_homes`: where to remember which repository holds a blob (mounts next time; none: not
    remembered); `builder_id`: the provenance's builder."""
    extra = more_tags or {}
    host = target.registry
    stats, home = PushStats(), BlobHome.for_registry(host, blob_homes)
    t0 = time.monotonic()

    # 1. content: blobs, then each manifest by digest
    built = []
    with reporter.progress("push", None) as bar:
        for img, defn, b in built_images:
            repo = repository_for(target.prefix, img)
            reporter.info(f"[bold]push[/] {img.alias} → {host}/{repo}")
            try:
                push_image_content(client, store, repo, b.manifest, stats, home, parallel=parallel,
                                   progress=bar.advance)
            finally:
                home.save()
            built.append((img, defn, b, repo))
    # 2. indexes, by digest
    repo_of = {img.alias: repo for img, _, _, repo in built}
    plans, notes = [], []
    if indexes:
        members = [(img, Member.of(img, b)) for img, _, b, _ in built] + published_members(
            client, m, [img for img, *_ in built], target.prefix, repo_of)
        plans, notes = plan_indexes(members)
    for p in plans:
        client.put_manifest(repo_of[p.members[0].alias], p.digest, p.raw, INDEX)
    # 3. referrers
    reps: dict[str, bytes] = dict(check_reports or {})  # alias → Report.to_json() of this build
    attached: dict[str, list[dict]] = {}
    referrer_bytes = 0
    if referrers:
        for img, defn, b, repo in built:
            report = reps.get(img.alias) or (load_report(reports, img, b.digest) if reports else None)
            if report is not None and not json.loads(report).get("ok", False):
                reporter.warn(f"{img.alias}: its check report says some checks failed (attached as it is)")
            subject = {"mediaType": MANIFEST, "digest": b.digest, "size": len(b.manifest)}
            got = attach(client, repo, subject, evidence(defn, b.digest, report, builder_id), iso(defn.source_date_epoch))
            referrer_bytes += sum(a.uploaded for a in got)
            attached[img.alias] = [{**a.descriptor, "via": a.via} for a in got]
    # 4. tags last, then 5. verify
    for img, _, b, repo in built:
        push_tags(client, repo, b.manifest, [img.name, img.alias, *extra.get(img.alias, [])])
    for p in plans:
        push_tags(client, repo_of[p.members[0].alias], p.raw, [p.tag, *extra.get(p.tag, [])], INDEX)
    for img, _, b, repo in built:
        verify(client, repo, b.digest, [img.name, img.alias, *extra.get(img.alias, [])])
    for p in plans:
        verify(client, repo_of[p.members[0].alias], p.digest, [p.tag, *extra.get(p.tag, [])])
    seconds = time.monotonic() - t0
    for n in notes:
        reporter.warn(n)
    images = [{"alias": img.alias, "name": img.name, "repository": repo, "digest": b.digest,
               "tags": [img.name, img.alias, *extra.get(img.alias, [])], "reference": f"{host}/{repo}:{img.name}",
               "by_digest": f"{host}/{repo}@{b.digest}", "referrers": attached.get(img.alias, [])}
              for img, _, b, repo in built]
    idx = [{"tag": p.tag, "digest": p.digest, "repository": repo_of[p.members[0].alias],
            "reference": f"{host}/{repo_of[p.members[0].alias]}:{p.tag}",
            "members": [{"alias": mm.alias, "digest": mm.digest, "platform": mm.platform} for mm in p.members]}
           for p in plans]
    s = {k: getattr(stats, k) for k in ("blobs", "uploaded_blobs", "uploaded_bytes", "mounted", "skipped")}
    s["referrer_bytes"] = referrer_bytes
    s["seconds"] = round(seconds, 3)
    s["bytes_per_second"] = round(stats.uploaded_bytes / seconds) if seconds > 0 else 0
    return {"registry": host, "images": images, "indexes": idx, "notes": notes, "stats": s}
