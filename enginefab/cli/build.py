"""`enginefab build`: images from their pinned definitions into the store and an OCI layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from enginefab.cli import args, present, replay
from enginefab.cli.app import AllOpt, CacheOpt, DemoOpt, JsonOpt, NamesArg, StoreOpt, run_guarded


@run_guarded
def build(
    names: NamesArg = None,
    all_: AllOpt = False,
    demo: DemoOpt = False,
    out: Annotated[Path, typer.Option("--out", help="OCI image layout to write the images into.")] = Path("out"),
    store: StoreOpt = None,
    reachable_layers: Annotated[bool, typer.Option(
        "--reachable-layers", help="Build every layer whose inputs can be fetched here; report the others "
        "(unreachable input, or a run step over one) instead of failing. Incomplete images get no manifest.")] = False,
    cache: CacheOpt = None,
    plain_http: Annotated[bool, typer.Option("--plain-http", help="Talk HTTP to the --cache registry (loopback: always).")] = False,
    ca_cert: Annotated[Optional[Path], typer.Option("--ca-cert", help="CA certificate of the --cache registry's TLS.")] = None,
    archive_max_bytes: Annotated[Optional[int], typer.Option(
        "--archive-max-bytes", help="Most bytes one input archive may expand to [env ENGINEFAB_ARCHIVE_MAX_BYTES; "
        "default 16 GiB].", show_default=False)] = None,
    archive_max_entries: Annotated[Optional[int], typer.Option(
        "--archive-max-entries", help="Most entries in one input archive [env ENGINEFAB_ARCHIVE_MAX_ENTRIES; "
        "default 50000].", show_default=False)] = None,
    archive_max_ratio: Annotated[Optional[int], typer.Option(
        "--archive-max-ratio", help="Most expanded bytes per archive byte, past 16 MiB [env "
        "ENGINEFAB_ARCHIVE_MAX_RATIO; default 100].", show_default=False)] = None,
    creation_order: Annotated[str, typer.Option(
        "--creation-order", hidden=True, help="given or reverse: the order stagers create files in (it never "
        "reaches a layer; the determinism tests build with reverse to prove it).")] = "given",
    as_json: JsonOpt = False,
) -> None:
    """Build images from build/<alias>.json (or definition files given by path) into the store
    and an OCI layout.

    The last line printed per image is `<alias> <manifest digest>` (with --reachable-layers,
    `<alias> incomplete: …` for an image some of whose inputs cannot be fetched here)."""
    from enginefab.assemble.pipeline import build_images, is_definition_file
    from enginefab.assemble.staging import as_given, in_reverse

    orders = {"given": as_given, "reverse": in_reverse}
    if creation_order not in orders:
        raise typer.BadParameter("given or reverse", param_hint="--creation-order")
    m = args.matrix()
    files = [n for n in names or [] if is_definition_file(n)]
    rest = [n for n in names or [] if not is_definition_file(n)]
    imgs = args.pick(m, rest, all_, demo) if (rest or all_ or demo or not files) else []
    args.settings(archive_max_bytes=archive_max_bytes, archive_max_entries=archive_max_entries,
                  archive_max_ratio=archive_max_ratio)
    st = args.store(store)
    replay.watch_outputs(out, st.root)  # a build that changes nothing is replayed next time
    results = build_images(m, imgs, st, out, args.session(), reachable_only=reachable_layers, files=files,
                           shared=args.shared(cache, st, plain_http, ca_cert),
                           options=args.build_options(creation_order=orders[creation_order]))
    if as_json:
        present.emit([r.as_dict() for r in results])
    else:
        present.built(results)
    if any(r.failed for r in results):
        raise typer.Exit(2)
