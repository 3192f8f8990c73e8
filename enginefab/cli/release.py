"""Commands that compose the stages: release (lock --check, build, check, push), its report page,
and the demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from enginefab.cli import args, present
from enginefab.cli.app import (AllOpt, CacheOpt, CaOpt, DemoOpt, JsonOpt, NamesArg, PlainOpt, StoreOpt, ToOpt,
                               run_guarded)


@run_guarded
def release(
    names: NamesArg = None,
    all_: AllOpt = False,
    demo: DemoOpt = False,
    to: ToOpt = "",
    plain_http: PlainOpt = False,
    ca_cert: CaOpt = None,
    out: Annotated[Path, typer.Option("--out", help="OCI layout to build into.")] = Path("out"),
    store: StoreOpt = None,
    level: Annotated[Optional[list[str]], typer.Option("--level", help="Check levels that gate the push (repeatable; default: all).")] = None,
    reports: Annotated[Optional[Path], typer.Option("--reports", help="Also write each image's check report into this directory.")] = None,
    record: Annotated[Optional[Path], typer.Option("--record", help="Write what was released (lock, digests, tags, "
                                                   "referrers, check counts) here as canonical JSON.")] = None,
    notes: Annotated[Optional[Path], typer.Option("--notes", help="Write the release notes (NOTES.md), the release "
                                                  "page (index.html) and the record here; the lock is kept there "
                                                  "for the next release's notes. [default: release/ beside the --out layout]")] = None,
    since: Annotated[Optional[str], typer.Option("--since", help="The previous release's lock, for the notes: @REV "
                                                 "(a git revision, e.g. the last release's tag), a checkout or a "
                                                 "directory of definitions [default: the lock kept in --notes].")] = None,
    tag: Annotated[Optional[str], typer.Option("--tag", help="Release tag: each image is also tagged <alias>-TAG, "
                                               "each index <index tag>-TAG.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be built and pushed; build, check and "
                                          "write nothing (the registry is only read).")] = False,
    cache: CacheOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """lock --check, build, check, push: each stage only when the one before passed.

    A stale lock builds nothing; if any image fails a check, no image is pushed. The push attaches
    the SBOM, the provenance and this run's check report to each image. A release the registry
    has already (every tag and referrer) publishes nothing and says so. Writes release notes and a
    release page (--notes). Exits 1 when a stage fails."""
    from enginefab.release.pipeline import Options, release as do_release

    args.require_target(to)
    m = args.matrix()
    imgs = args.pick(m, names, all_, demo)
    st = args.store(store)
    opts = Options(plain_http=plain_http, ca_cert=str(ca_cert) if ca_cert else None, levels=level or None,
                   reports_dir=reports, record=record, notes_dir=notes or out.parent / "release", since=since,
                   tag=tag, dry_run=dry_run, shared=args.shared(cache, st, plain_http, ca_cert))
    rel = do_release(m, imgs, st, out, to, args.settings(), args.session(), opts)
    if as_json:
        present.emit(rel.as_dict())
    else:
        present.released(rel, to)
    if not rel.ok:
        raise typer.Exit(1)


@run_guarded
def report(
    names: NamesArg = None,
    all_: AllOpt = False,
    demo: DemoOpt = False,
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write.")] = Path("release/index.html"),
    reports: Annotated[Optional[Path], typer.Option("--reports", help="Check reports `enginefab check --reports DIR` "
                                                    "wrote (a report about another digest is ignored).")] = None,
    record: Annotated[Optional[Path], typer.Option("--record", help="A release record (release --record): tags, "
                                                   "references and referrer links on the page.")] = None,
    plain_http: Annotated[bool, typer.Option("--plain-http", help="Link the referrers over HTTP, not HTTPS.")] = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The release page of built images (one HTML file, no server): images × layers with sizes and
    sharing, digests, check results per level, referrers. The images must be built."""
    from enginefab.release.report import write_report

    m = args.matrix()
    doc = write_report(m, args.pick(m, names, all_, demo), args.store(store), out, args.session(), reports=reports,
                       record=record, plain_http=plain_http)
    if as_json:
        present.emit(doc)
    else:
        print(out)


@run_guarded
def demo(
    port: Annotated[int, typer.Option(help="Port of the local registry on 127.0.0.1.")] = 5000,
    out: Annotated[Path, typer.Option("--out", help="OCI layout to build into.")] = Path("out"),
    store: StoreOpt = None,
) -> None:
    """The whole pipeline on the demo images: lock --check, build, check, push to a local registry."""
    from enginefab.demo import run_demo

    raise typer.Exit(run_demo(args.settings(store=store), args.session(), port=port, out=out))
