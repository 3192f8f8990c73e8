"""What the commands print: results on stdout (JSON with --json), progress and verdicts on stderr.

Each function takes a stage's result and writes it; none decides anything the stage did not.
rich is imported here, inside the functions, so that `--help` never loads it.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from enginefab.core.errors import EnginefabError


def emit(obj) -> None:
    """`obj` as JSON on stdout (--json)."""
    sys.stdout.write(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def say(lines) -> None:
    """Result lines on stdout."""
    for line in lines:
        print(line)


def terminal_width() -> int | None:
    """The terminal's width when stdout is one; None (no cutting) for a file or a pipe."""
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


def console():
    """The command line's one stderr console (the rich reporter writes to it too)."""
    from enginefab.cli import args

    return args.console()


def err(text: str) -> None:
    """A message on stderr (rich markup, soft-wrapped), shown even with --json."""
    console().print(text, soft_wrap=True)


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def error(e: EnginefabError, as_json: bool) -> None:
    if as_json:
        emit(e.as_dict())
    else:
        err(f"[bold red]error:[/] {_esc(str(e))}")


def note(text: str) -> None:
    """A verdict on stderr (rich markup), shown even with --json."""
    console().print(text)


def plain(text: str) -> None:
    """Text on stderr, not read as markup, even with --json."""
    console().print(text, soft_wrap=True, markup=False)


def info(text: str) -> None:
    """A message on stderr, unless quiet (--json, ENGINEFAB_QUIET=1)."""
    from enginefab.cli import args

    args.reporter().info(text)


# -- matrix -----------------------------------------------------------------------------------


def matrix_table(rows: list[dict], broken) -> None:
    """`list`: one row per image, then the images and files that do not load."""
    from rich.console import Console
    from rich.table import Table

    t = Table("alias", "canonical name", "engine", "accelerator", "py", "os", "arch", box=None)
    for r in rows:
        acc = r["accelerator"] + (f" {r['accelerator_version']}" if r["accelerator_version"] else "")
        t.add_row(r["alias"] + (" (demo)" if r["demo"] else ""), r["name"], f"{r['engine']} {r['engine_version']}", acc,
                  r["python"], f"{r['os']} {r['os_version']}", r["arch"])
    # piped into grep or a file: never cut a name short to fit 80 columns
    con = Console(width=None if sys.stdout.isatty() else 400)
    con.print(t)
    for b in broken:
        who = f"{b.alias} ({b.name})" if b.alias else f"engines/{b.file} (its images)"
        con.print(f" [red]invalid[/] {_esc(who)}: {_esc(b.reason())}", soft_wrap=True)
    if broken:
        err(f"[red]{len(broken)} invalid[/] (`enginefab show ALIAS` or `enginefab lock --check` "
             "lists every problem with its fix)")


def definition(defn, apt: dict, alias: str) -> list[str]:
    """`show`: a pinned definition, its layers and inputs, with each pin's trust and source."""
    from enginefab.lock.stackdebs import deb_origin

    out = [f"{defn.image.name}  ({defn.image.alias})",
           f"  platform  {defn.image.platform}   python {defn.python.version} ({defn.python.interpreter})"]
    if defn.parent:
        out.append(f"  from      {defn.parent.label} (manifest {defn.parent.manifest}; "
                   f"{len(defn.parent.distributions)} Python distributions, {len(defn.parent.debs)} packages)")
    if defn.base:
        out.append(f"  base      {defn.base.reference}@{defn.base.digest}")
        if defn.base.trust:
            out.append(f"            trust {defn.base.trust}: {defn.base.source}")
    out.append(f"  compress  {defn.compression.algorithm} level {defn.compression.level} "
               f"({defn.compression.implementation} {defn.compression.version})")
    for layer in defn.layers:
        size = sum(i.size for i in layer.inputs)
        out.append(f"  layer {layer.id}  [{layer.kind}, {len(layer.inputs) or len(layer.files)} items, "
                   f"{size / 1e6:.1f} MB in]")
        for i in layer.inputs:
            sha = i.sha256[:12] if i.sha256 else (f"tree {i.tree[:12]}" if i.tree else
                                                  "unpinned" if i.kind == "deb" else "awaiting")
            origin = deb_origin(i, apt) if i.kind == "deb" else []
            where = (f"  from {origin[0]}" if i.url else f"  from one of {', '.join(origin)}") if origin else ""
            out.append(f"      {i.kind:6} {i.name} {i.version}  {sha}  {i.size}{where}")
            if i.commit:
                out.append(f"             {i.url} commit {i.commit} tree {i.tree}")
            if i.trust:  # pins written in engines/: who vouches for the hash, and where it was read
                out.append(f"             trust {i.trust}: {i.source}")
    unpinned = sum(1 for i in defn.inputs() if i.kind == "deb" and not i.url)
    if unpinned:
        out.append(f"  {unpinned} packages are not pinned yet: run `enginefab lock {alias}` on a machine that "
                   "reaches their repositories (docs/presets.md)")
    return out


def plan(rep: dict) -> None:
    """`plan`: the layer and image tables, then the totals."""
    from enginefab.assemble.planreport import human
    from enginefab.cli import plantext

    print("\n".join(plantext.lines(rep, terminal_width())))
    tot = rep["totals"]
    print(f"{tot['images']} images, {tot['layers']} unique layers ({tot['shared_layers']} shared), "
          f"at most {tot['max_layers_per_image']} layers per image (budget {tot['budget']}); sum of image sizes "
          f"{human(tot['sum_of_image_sizes'])}, unique {human(tot['unique_bytes'])}, sharing saves "
          f"{human(tot['saved_by_sharing'])}")


# -- lock -------------------------------------------------------------------------------------


def added(files: list[dict]) -> None:
    for a in files:
        info(f"added {a['name']} sha256 {a['sha256']} ({a['status']})")


def lock_check(rep, images: int) -> None:
    for w in rep.warnings:
        console().print(f"[yellow]warning:[/] {w}")
    for p in rep.problems:
        err(f"[red]problem:[/] {_esc(p)}")
    if not rep.problems:
        console().print(f"[green]lock is current[/] ({images} images)")


def upstream(problems: list[str], images: int) -> None:
    """`lock --verify`: where upstream differs from build/."""
    for p in problems:
        console().print(f"[red]differs:[/] {p}")
    if not problems:
        console().print(f"[green]upstream agrees[/] ({images} images)")


def locked(res) -> None:
    for a in res.written:
        console().print(f"[green]wrote[/] build/{a}.json")
    for a in res.unchanged:
        console().print(f"[dim]unchanged[/] build/{a}.json")


# -- build, check -----------------------------------------------------------------------------


def built(results) -> None:
    """`build`: `<alias> <digest>` per image; an incomplete one's layers that did not build, then its count."""
    for r in results:
        if r.complete:
            print(f"{r.alias} {r.digest}")
            continue
        for o in r.outcomes:
            if not o.ok:
                err(f"  [yellow]{o.status}[/] {o.id}: {o.error.message if o.error else ''}")
        print(f"{r.alias} incomplete: {r.built + r.cached} of {len(r.outcomes)} layers built here, "
              f"{r.unreachable} unreachable, {r.blocked} blocked, {r.failed} failed")


def write_check_reports(reps, junit: Path | None, reports: Path | None) -> None:
    """`check --junit FILE` and `--reports DIR`."""
    from enginefab.check.report import junit as junit_xml
    from enginefab.check.report import write_reports

    if junit:
        junit.parent.mkdir(parents=True, exist_ok=True)
        junit.write_bytes(junit_xml(reps))
    if reports:
        write_reports(reps, reports)


MARKS = {"pass": "[green]✓[/]", "warn": "[yellow]⚠[/]", "fail": "[red]✗[/]", "skip": "[yellow]-[/]", "error": "[red]![/]"}


def checked(reps) -> None:
    """`check`: per image its counts, then one line per check."""
    for r in reps:
        c = r.counts()
        colour = "green" if r.ok else "red"
        console().print(f"[{colour}]{r.image}[/]: {c['pass']} passed, {c['warn']} warnings, {c['fail']} failed, "
                     f"{c['error']} errors, {c['skip']} skipped")
        for res in r.results:
            err(f"  {MARKS[res.status]} {res.level:11} {_esc(res.name)}: {_esc(res.detail)}")


# -- publish, release -------------------------------------------------------------------------


def pushed(images: list[dict], indexes: list[dict]) -> None:
    """`<alias> <digest> <reference>` per image, `<tag> <digest> <reference>` per index (push, release)."""
    for p in images:
        print(f"{p['alias']} {p['digest']} {p['reference']}")
    for x in indexes:
        print(f"{x['tag']} {x['digest']} {x['reference']}")


def push_stats(s: dict) -> None:
    console().print(f"uploaded {s['uploaded_bytes']} bytes in {s['uploaded_blobs']} blobs in {s['seconds']:.1f} s "
                 f"({s['bytes_per_second'] / 1e6:.1f} MB/s); {s['skipped']} already present, {s['mounted']} mounted; "
                 f"referrers {s['referrer_bytes']} bytes")


def pulled(res, out: Path) -> None:
    print(f"{res.reference} {res.digest}")
    console().print(f"{res.blobs} blobs verified ({res.downloaded_bytes} bytes downloaded, {res.reused} already in {out})")


def referrers(subject: str, descs: list[dict], how: str) -> None:
    console().print(f"{subject}: {len(descs)} referrers ({how})")
    for d in descs:
        title = (d.get("annotations") or {}).get("org.opencontainers.image.title", "")
        print(f"{d.get('artifactType', '?')} {d['digest']} {d['size']} {title}".rstrip())


def released(rel, to: str) -> None:
    """`release`: the dry run's plan, what was pushed, or the stage it stopped at and why."""
    from enginefab.release.dryrun import lines as dry_lines

    if rel.ok and rel.dry_run is not None:
        print("\n".join(dry_lines(rel.dry_run, to)))
    elif rel.ok:
        pushed(rel.images, rel.indexes)
        if not rel.published:
            print("already released: the registry has every tag and referrer of this lock; nothing published")
    else:
        console().print(f"[red]release stopped at {rel.stage}[/]: nothing was pushed")
        for p in rel.problems:
            err(f"  [red]✗[/] {_esc(p)}")


# -- store ------------------------------------------------------------------------------------


def store_verified(problems: list[str], stale: list) -> None:
    for p in problems:
        console().print(f"[red]problem:[/] {p}")
    if stale:
        console().print(f"{len(stale)} temporaries of interrupted builds (removed by `enginefab store gc`)")
    if not problems:
        console().print("[green]store is intact[/]")


def collected(res: dict, dry_run: bool) -> None:
    verb = "would remove" if dry_run else "removed"
    console().print(f"{verb} {res['removed']} blobs ({res['freed_bytes'] / 1e6:.1f} MB with temporaries), "
                 f"kept {res['kept']} (roots: {', '.join(res['roots'])})")
