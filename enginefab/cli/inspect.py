"""Commands that read the matrix, a definition or a layout and change nothing: list, show,
schema, plan, diff, validate."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from enginefab.cli import args, present
from enginefab.cli.app import AliasArg, JsonOpt, NamesArg, StoreOpt, run_guarded


@run_guarded
def list_(as_json: JsonOpt = False) -> None:
    """List every image of the matrix (name, alias, engine, accelerator, Python, OS, arch).

    An image or file of engines/ that does not load is listed as invalid, with the reason
    (exit 1); the others are listed as usual."""
    m = args.matrix()
    rows = [i.summary() | {"valid": True} for i in m.images]
    if as_json:
        present.emit(rows + [b.as_dict() for b in m.broken])
    else:
        present.matrix_table(rows, m.broken)
    raise typer.Exit(1 if m.broken else 0)


@run_guarded
def show(name: AliasArg, as_json: JsonOpt = False) -> None:
    """Show an image's pinned definition (build/<alias>.json): layers, inputs, and for every pin
    written in engines/ its trust (vendor-published, third-party, recorded-on-first-use) and source."""
    from enginefab.core.definition import load_definition
    from enginefab.core.paths import definition_path

    m = args.matrix()
    img = m.get(name)
    defn = load_definition(definition_path(m.root, img.alias))
    if as_json:
        sys.stdout.write(defn.to_json().decode())
    else:
        present.say(present.definition(defn, m.platforms.apt, img.alias))


@run_guarded
def schema(out: Annotated[Optional[Path], typer.Option(help="Write the JSON schemas into this directory.")] = None,
           as_json: JsonOpt = False) -> None:
    """JSON schemas of engines/*.toml (for editors) and of build/*.json."""
    from enginefab.core.definition import Definition
    from enginefab.engines.matrix import json_schema

    schemas = json_schema() | {"definition.json": Definition.model_json_schema(by_alias=True)}
    if out:
        out.mkdir(parents=True, exist_ok=True)
        for k, v in schemas.items():
            (out / (k.replace(".toml", "") + ".schema.json")).write_text(json.dumps(v, indent=1, sort_keys=True) + "\n")
        present.info(f"wrote {len(schemas)} schemas to {out}")
    else:
        present.emit(schemas)


@run_guarded
def plan(
    names: NamesArg = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The matrix-wide layer plan: per layer its images, size and the bytes sharing saves; per
    image its layer count and size; totals (sum of image sizes vs unique bytes).

    Sizes are exact where the layer is built (action cache of --store) or pinned (base blobs),
    else estimated from the input sizes; run steps are `unknown` until built. Default: every image."""
    from enginefab.assemble.pipeline import definitions
    from enginefab.assemble.planreport import plan as make_plan

    m = args.matrix()
    files = [n for n in names or [] if n.endswith(".json") and Path(n).is_file()]
    rest = [n for n in names or [] if n not in files]
    imgs = args.pick(m, rest, not rest and not files, False) if (rest or not files) else []
    rep = make_plan(definitions(m, files, imgs), args.store(store))
    if as_json:
        present.emit(rep)
    else:
        present.plan(rep)


@run_guarded
def diff(
    a: Annotated[str, typer.Argument(help="An OCI layout (DIR or DIR:REF), a definition file, or an image alias; "
                                     "or a lock: a checkout, a build/ directory, or @REV (build/ at a git revision).")],
    b: Annotated[str, typer.Argument(help="The same kinds as A.")],
    store: StoreOpt = None,
    no_files: Annotated[bool, typer.Option("--no-files", help="Compare inputs and layer digests only.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Which inputs, layers and files differ between two images (explains a non-reproducible
    build); between two locks (`enginefab diff @HEAD .`), per image whether its digest changes,
    which layers come and go, and why. Exits 1 when they differ."""
    from enginefab.assemble import churn
    from enginefab.assemble import diff as d
    root = args.settings().root
    st = args.store(store)
    if churn.is_lock_set(a) and churn.is_lock_set(b):
        res = churn.compare(churn.read_lock(a, root), churn.read_lock(b, root), st, labels=(a, b))
        render = churn.render
    else:
        sa = d.open_side(a, st, root)
        sb = d.open_side(b, st, root, hint=a.rpartition(":")[2] if ":" in a else None)
        res = d.diff(sa, sb, files=not no_files, limit=None if as_json else 40)
        render = d.render
    if as_json:
        present.emit(res)
    else:
        present.say(render(res))
    raise typer.Exit(0 if res["identical"] else 1)


@run_guarded
def validate(
    layout: Annotated[Path, typer.Argument(help="An OCI image layout directory.")],
    as_json: JsonOpt = False,
) -> None:
    """Validate an OCI layout against the official OCI JSON schemas (oci-layout, index, every
    manifest and config) and check every blob's digest and size."""
    from enginefab.core import ocischema

    n = ocischema.validate_layout(layout, args.settings().oci_schemas)
    if as_json:
        present.emit({"ok": True, "documents": n})
    else:
        present.note(f"[green]valid[/]: {n} documents in {layout}")
