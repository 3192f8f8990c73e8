"""`enginefab store`: verify the content-addressed store, garbage-collect it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from enginefab.cli import args, present
from enginefab.cli.app import JsonOpt, StoreOpt, run_guarded


group = typer.Typer(help="The content-addressed store: verify, garbage-collect.",
                    no_args_is_help=True, rich_markup_mode=None, add_completion=False)


@group.command("verify")
@run_guarded
def verify(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Re-hash every blob and check every action-cache entry (temporaries left by killed builds
    are listed, not problems: nothing reads them, gc removes them)."""
    st = args.store(store)
    problems = st.verify()
    stale = st.stale()
    if as_json:
        present.emit({"ok": not problems, "problems": problems, "stale_temporaries": stale})
    else:
        present.store_verified(problems, stale)
    raise typer.Exit(1 if problems else 0)


@group.command("gc")
@run_guarded
def gc(
    store: StoreOpt = None,
    keep: Annotated[Optional[list[str]], typer.Option("--keep", help="Roots: definitions (what build/*.json "
                    "references), layouts (layouts builds wrote, and --layout). Repeatable; default both.")] = None,
    layout: Annotated[Optional[list[Path]], typer.Option("--layout", help="Also keep what this OCI layout references.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be removed; remove nothing.")] = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Fail at once if a build is using the store.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove blobs no root references, their cache entries and leftovers of killed builds."""
    from enginefab.assemble.gc import KINDS, collect

    s = args.settings()
    res = collect(args.store(store), s.root, s.downloads, keep=tuple(keep or KINDS), layouts=list(layout or []),
                  dry_run=dry_run, wait=not no_wait)
    if as_json:
        present.emit(res)
    else:
        present.collected(res, dry_run)
