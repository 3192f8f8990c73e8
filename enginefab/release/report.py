"""`enginefab report`: the release page of images already built, from the store, the check
reports `enginefab check --reports DIR` wrote and, optionally, a release record (its tags,
references and referrers). It builds, checks and contacts nothing."""

from __future__ import annotations

import json
from pathlib import Path

from enginefab.assemble.builder import Builder
from enginefab.assemble.pipeline import definition_for
from enginefab.assemble.store import Store
from enginefab.core.errors import BuildError
from enginefab.core.fsutil import write_atomic
from enginefab.core.reporter import Reporter
from enginefab.engines.matrix import Image, Matrix
from enginefab.release.dryrun import layers_to_build
from enginefab.release.page import html
from enginefab.release.plan import lock_digest
from enginefab.release.summary import Subject, document
from enginefab.transport.session import Session


def _json_file(path: Path, what: str) -> dict:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise BuildError(f"{path}: cannot read {what}: {e}", input=str(path),
                         fix=f"give the file {what.split(' (')[0]} wrote") from None
    if not isinstance(doc, dict):
        raise BuildError(f"{path} is not {what}", input=str(path))
    return doc


def _report_of(reports: Path | None, alias: str, digest: str, reporter: Reporter) -> dict | None:
    path = reports / f"{alias}.json" if reports else None
    if path is None or not path.is_file():
        return None
    doc = _json_file(path, "a check report (enginefab check --reports DIR)")
    if doc.get("image") != alias or doc.get("digest") != digest:
        reporter.warn(f"{path} is about {doc.get('image')} {doc.get('digest')}, not {alias} {digest}: ignored")
        return None
    return doc


def write_report(m: Matrix, imgs: list[Image], store: Store, out: Path, session: Session, *,
                 reports: Path | None = None, record: Path | None = None, plain_http: bool = False) -> dict:
    """The release page of `imgs` (built in `store`; a base config read through `session`) to `out`."""
    rec = _json_file(record, "a release record (enginefab release --record)") if record else {}
    published = {d.get("alias"): d for d in rec.get("images", []) if isinstance(d, dict)}
    subjects = []
    for img in imgs:
        defn = definition_for(m, img)
        absent = [la["id"] for la in layers_to_build(defn, store) if not la["cached"]]
        if absent:
            raise BuildError(f"{img.alias} is not built in {store.root} ({len(absent)} layers missing, e.g. {absent[0]})",
                             image=img.alias, fix=f"run `enginefab build {img.alias}` first (same --store)")
        b = Builder(store, session=session).image(defn)
        pub = published.get(img.alias)
        subjects.append(Subject(defn, b, _report_of(reports, img.alias, b.digest, session.reporter),
                                pub if pub and pub.get("digest") == b.digest else None))
    registry = next((d["reference"].split("/", 1)[0] for d in published.values() if d.get("reference")), None)
    doc = document(subjects, title="enginefab images", lock=lock_digest([s.defn for s in subjects]), since=None,
                   old=None, registry=registry, plain_http=plain_http, indexes=rec.get("indexes", []))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, html(doc).encode())
    return doc
