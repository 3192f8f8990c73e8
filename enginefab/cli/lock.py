"""`enginefab lock`: resolve every input (write build/), --check it offline, --verify it online,
--add-file a manual input."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from enginefab.cli import args, present
from enginefab.cli.app import AllOpt, DemoOpt, JsonOpt, NamesArg, StoreOpt, run_guarded


@run_guarded
def lock(
    names: NamesArg = None,
    all_: AllOpt = False,
    demo: DemoOpt = False,
    check: Annotated[bool, typer.Option("--check", help="Offline: fail if engines/ and build/ disagree or a pin is missing.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="With --check: also fail on images never locked, manual "
                                         "inputs awaiting a file and packages not pinned yet.")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Online: re-resolve the index pins (PyPI, apt, registries) "
                                         "and report where upstream differs from build/; writes nothing.")] = False,
    add_file: Annotated[Optional[list[Path]], typer.Option("--add-file", help="Add a user-downloaded file (manual input) to the store.")] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Resolve every input to exact bytes and write build/<alias>.json (all or nothing).

    A derived image's matrix parent is built into the store (--store) to pin its manifest."""
    if add_file:
        _add_files(add_file, as_json)
        if not (names or all_ or demo or check):
            return
    m = args.matrix()
    if check:
        _check(m, strict, as_json)
    if verify:
        _verify(m, args.pick(m, names, all_ or not (names or demo), demo), as_json)
    from enginefab.assemble import compress
    from enginefab.assemble.parents import parent_source
    from enginefab.assemble.pipeline import matrix_parents
    from enginefab.lock.locker import lock as do_lock  # the resolvers: not needed by --check

    imgs = args.pick(m, names, all_ or not (names or demo), demo)
    settings = m.platforms.compression
    res = do_lock(m, imgs, compress.contract(settings.algorithm, settings.level), args.session(),
                  parents=parent_source(args.store(store), matrix_parents(m), args.session()))
    if as_json:
        present.emit({"written": res.written, "unchanged": res.unchanged})
    else:
        present.locked(res)


def _add_files(files: list[Path], as_json: bool) -> None:
    from enginefab.lock.manual import add_files

    added = add_files(args.matrix(), files, args.settings().downloads)
    if as_json:
        present.emit(added)
    present.added(added)


def _check(m, strict: bool, as_json: bool) -> None:
    """`lock --check`: exit 1 when engines/ and build/ disagree or a pin is missing."""
    from enginefab.lock import check as lock_check

    rep = lock_check.report(m, strict=strict, cache=args.settings().downloads)
    if as_json:
        present.emit(rep.as_dict())
    else:
        present.lock_check(rep, len(m.images))
    raise typer.Exit(1 if rep.problems else 0)


def _verify(m, imgs, as_json: bool) -> None:
    """`lock --verify`: exit 1 where upstream differs from build/."""
    from enginefab.lock.verify import verify as do_verify

    problems = do_verify(m, imgs, args.session())
    if as_json:
        present.emit({"ok": not problems, "problems": problems})
    else:
        present.upstream(problems, len(imgs))
    raise typer.Exit(1 if problems else 0)
