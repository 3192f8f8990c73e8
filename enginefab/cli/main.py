"""The `enginefab` command line: one sub-command per pipeline stage.

Errors a user can act on print as one paragraph (what, which image and input, the fix) and exit
2; failing checks exit 1. `--json` prints machine-readable results on stdout and keeps progress
and messages on stderr.
"""

from __future__ import annotations

import json
import re
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError

from enginefab.core import ui
from enginefab.core.errors import EnginefabError, storage_error

app = typer.Typer(
    name="enginefab",
    help="Reproducible, matrix-planned OCI images for AI training engines.\n\n"
    "engines/ (typed matrix) → lock → build/ (pinned definitions) → build → check → push.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts hold literal brackets ([:PORT], [/VARIANT]), not markup
    add_completion=False,
)
store_app = typer.Typer(help="The content-addressed store: verify, garbage-collect.", no_args_is_help=True, rich_markup_mode=None)
registry_app = typer.Typer(help="A local OCI registry (Debian's docker-registry) on 127.0.0.1.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(store_app, name="store")
app.add_typer(registry_app, name="registry")
nix_app = typer.Typer(help="What the flake's derivations run (flake.nix; docs/nix.md).", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(nix_app, name="nix")
render_app = typer.Typer(help="Generators: Dockerfiles and CI workflows from the pinned definitions.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(render_app, name="render")

@app.callback()
def _setup() -> None:
    """Reproducible, matrix-planned OCI images for AI training engines."""
    from enginefab.core import debuglog
    from enginefab.core.paths import cache_root

    debuglog.setup(cache_root() / "logs" / "debug.log")


JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
NamesArg = Annotated[Optional[list[str]], typer.Argument(help="Image aliases or canonical names.", show_default=False)]
AllOpt = Annotated[bool, typer.Option("--all", help="Every image in the matrix.")]
DemoOpt = Annotated[bool, typer.Option("--demo", help="The demo images (every input reachable from PyPI and Debian).")]
StoreOpt = Annotated[Optional[Path], typer.Option("--store", help="Store directory [default: ~/.cache/enginefab/store].")]
ToOpt = Annotated[str, typer.Option("--to", help="REGISTRY[:PORT]/PREFIX (e.g. 127.0.0.1:5000/enginefab), or a target "
                                    "named in registry/targets.toml.")]
PlainOpt = Annotated[bool, typer.Option("--plain-http", help="Talk HTTP, not HTTPS.")]
CaOpt = Annotated[Optional[Path], typer.Option("--ca-cert", help="CA certificate to verify the registry's TLS.")]
CacheOpt = Annotated[Optional[str], typer.Option(
    "--cache", help="A shared action cache in a registry, HOST[:PORT]/PREFIX (e.g. one for all CI runners): layers "
    "missing from the store are pulled from it (each verified), layers packed here are written to it; a cache that "
    "is down only slows the build. Credentials as for push.")]


def _emit(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def terminal_width() -> int | None:
    """The terminal's width when stdout is one; None (no cutting) for a file or a pipe."""
    import shutil

    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


def _fail(e: EnginefabError, as_json: bool) -> None:
    if as_json:
        _emit(e.as_dict())
    else:
        from rich.markup import escape

        ui.err.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
    raise typer.Exit(2)


def _matrix():
    """The matrix, its broken images and files kept aside: a command fails only for those it touches."""
    from enginefab.engines.matrix import load
    from enginefab.core.paths import project_root

    return load(project_root(), strict=False)


def _pick(m, names, all_, demo):
    from enginefab.core.errors import MatrixError

    imgs = m.select(names or [], all_=all_, demo=demo)
    if not imgs:
        raise MatrixError("no images chosen", fix="name images, or pass --all or --demo")
    return imgs


def _shared(cache: Optional[str], store, plain_http: bool, ca_cert: Optional[Path]):
    """The registry action cache `--cache` names, wired to the builder's SharedCache."""
    if not cache:
        return None
    from enginefab.assemble.remote import SharedCache
    from enginefab.transport.actioncache import RegistryActionCache

    kw = {"ca_cert": str(ca_cert) if ca_cert else None, "env": os.environ}
    if plain_http:
        kw["plain_http"] = True
    return SharedCache(RegistryActionCache.at(cache, **kw), store)


def _require_target(to: str) -> None:
    if not to:
        from enginefab.core.errors import RegistryError

        raise RegistryError("no target registry", fix="pass --to HOST[:PORT]/PREFIX, or a target of registry/targets.toml")


def _store(path: Optional[Path]):
    from enginefab.assemble.store import Store
    from enginefab.core.paths import default_store

    return Store(path or default_store())


def _archive_limits(max_bytes: Optional[int], max_entries: Optional[int], max_ratio: Optional[int]):
    """Expansion limits per input archive: a flag, else ENGINEFAB_ARCHIVE_MAX_*, else the default."""
    from enginefab.assemble.limits import DEFAULT, ArchiveLimits
    from enginefab.core.errors import BuildError

    def pick(flag: Optional[int], env: str, default: int) -> int:
        if flag is None and os.environ.get(env, "").strip():
            try:
                flag = int(os.environ[env])
            except ValueError:
                raise BuildError(f"{env}={os.environ[env]!r} is not a whole number",
                                 fix=f"set {env} to a positive integer, or unset it") from None
        if flag is not None and flag <= 0:
            raise BuildError(f"an archive limit must be positive (got {flag} for {env})", fix="pass a positive integer")
        return default if flag is None else flag

    return ArchiveLimits(max_bytes=pick(max_bytes, "ENGINEFAB_ARCHIVE_MAX_BYTES", DEFAULT.max_bytes),
                         max_entries=pick(max_entries, "ENGINEFAB_ARCHIVE_MAX_ENTRIES", DEFAULT.max_entries),
                         max_ratio=pick(max_ratio, "ENGINEFAB_ARCHIVE_MAX_RATIO", DEFAULT.max_ratio))


def run_guarded(fn):
    """Decorator: EnginefabError → clean message and exit 2."""
    import functools

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        as_json = bool(kw.get("as_json"))
        if as_json:
            ui.set_quiet(True)
        try:
            return fn(*a, **kw)
        except EnginefabError as e:
            _fail(e, as_json)
        except OSError as e:  # a read-only or full filesystem: a message naming the path, no traceback
            err = storage_error(e)
            if err is None:
                raise
            _fail(err, as_json)
        except ValidationError as e:  # a value from outside (an index, a registry) no model accepts
            from enginefab.core.fields import rule_of

            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            _fail(EnginefabError(f"{e.title}: field {where}: {rule_of(first)}",
                                 fix="the value came from outside (a definition, an index or a registry): "
                                     "correct it there, or report it if it came from upstream"), as_json)
        except KeyboardInterrupt:
            ui.err.print("[red]interrupted[/]")
            raise typer.Exit(130)

    return wrapper


# -- matrix -----------------------------------------------------------------------------------


@app.command("list")
@run_guarded
def list_(as_json: JsonOpt = False) -> None:
    """List every image of the matrix (name, alias, engine, accelerator, Python, OS, arch).

    An image or file of engines/ that does not load is listed as invalid, with the reason
    (exit 1); the others are listed as usual."""
    m = _matrix()
    rows = [i.summary() | {"valid": True} for i in m.images]
    if as_json:
        _emit(rows + [b.as_dict() for b in m.broken])
        raise typer.Exit(1 if m.broken else 0)
    from rich.markup import escape
    from rich.table import Table

    t = Table("alias", "canonical name", "engine", "accelerator", "py", "os", "arch", box=None)
    for r in rows:
        acc = r["accelerator"] + (f" {r['accelerator_version']}" if r["accelerator_version"] else "")
        t.add_row(r["alias"] + (" (demo)" if r["demo"] else ""), r["name"], f"{r['engine']} {r['engine_version']}", acc,
                  r["python"], f"{r['os']} {r['os_version']}", r["arch"])
    from rich.console import Console

    # piped into grep or a file: never cut a name short to fit 80 columns
    con = Console(width=None if sys.stdout.isatty() else 400)
    con.print(t)
    for b in m.broken:
        who = f"{b.alias} ({b.name})" if b.alias else f"engines/{b.file} (its images)"
        con.print(f" [red]invalid[/] {escape(who)}: {escape(b.reason())}", soft_wrap=True)
    if m.broken:
        ui.err.print(f"[red]{len(m.broken)} invalid[/] (`enginefab show ALIAS` or `enginefab lock --check` "
                     "lists every problem with its fix)")
        raise typer.Exit(1)


@app.command()
@run_guarded
def show(name: Annotated[str, typer.Argument(help="Alias or canonical name.")], as_json: JsonOpt = False) -> None:
    """Show an image's pinned definition (build/<alias>.json): layers, inputs, and for every pin
    written in engines/ its trust (vendor-published, third-party, recorded-on-first-use) and source."""
    from enginefab.core.definition import load_definition
    from enginefab.core.paths import definition_path

    m = _matrix()
    img = m.get(name)
    defn = load_definition(definition_path(m.root, img.alias))
    if as_json:
        sys.stdout.write(defn.to_json().decode())
        return
    print(f"{defn.image.name}  ({defn.image.alias})")
    print(f"  platform  {defn.image.platform}   python {defn.python.version} ({defn.python.interpreter})")
    if defn.base:
        print(f"  base      {defn.base.reference}@{defn.base.digest}")
        if defn.base.trust:
            print(f"            trust {defn.base.trust}: {defn.base.source}")
    print(f"  compress  {defn.compression.algorithm} level {defn.compression.level} "
          f"({defn.compression.implementation} {defn.compression.version})")
    repos = sorted(((r.url + "/", rid) for rid, r in m.platforms.apt.items()), reverse=True)  # longest prefix first
    for layer in defn.layers:
        size = sum(i.size for i in layer.inputs)
        print(f"  layer {layer.id}  [{layer.kind}, {len(layer.inputs) or len(layer.files)} items, {size / 1e6:.1f} MB in]")
        for i in layer.inputs:
            sha = i.sha256[:12] if i.sha256 else (f"tree {i.tree[:12]}" if i.tree else
                                                  "unpinned" if i.kind == "deb" else "awaiting")
            print(f"      {i.kind:6} {i.name} {i.version}  {sha}  {i.size}{_deb_origin(i, repos)}")
            if i.commit:
                print(f"             {i.url} commit {i.commit} tree {i.tree}")
            if i.trust:  # pins written in engines/: who vouches for the hash, and where it was read
                print(f"             trust {i.trust}: {i.source}")
    unpinned = sum(1 for i in defn.inputs() if i.kind == "deb" and not i.url)
    if unpinned:
        print(f"  {unpinned} packages are not pinned yet: run `enginefab lock {img.alias}` on a machine that reaches "
              "their repositories (docs/presets.md)")


def _deb_origin(i, repos: list[tuple[str, str]]) -> str:
    """`  from <apt id>` for a deb input (the repositories it may come from, while unpinned)."""
    if i.kind != "deb":
        return ""
    if i.url:
        return next((f"  from {rid}" for prefix, rid in repos if i.url.startswith(prefix)), f"  from {i.url}")
    ids = re.findall(r"(?:^|; )apt (\S+) ", i.where or "")
    return f"  from one of {', '.join(ids)}" if ids else ""


@app.command()
@run_guarded
def schema(out: Annotated[Optional[Path], typer.Option(help="Write the JSON schemas into this directory.")] = None,
           as_json: JsonOpt = False) -> None:
    """JSON schemas of engines/*.toml (for editors) and of build/*.json."""
    from enginefab.engines.matrix import json_schema
    from enginefab.core.definition import Definition

    schemas = json_schema() | {"definition.json": Definition.model_json_schema(by_alias=True)}
    if out:
        out.mkdir(parents=True, exist_ok=True)
        for k, v in schemas.items():
            (out / (k.replace(".toml", "") + ".schema.json")).write_text(json.dumps(v, indent=1, sort_keys=True) + "\n")
        ui.info(f"wrote {len(schemas)} schemas to {out}")
    else:
        _emit(schemas)


# -- lock -------------------------------------------------------------------------------------


@app.command()
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
    as_json: JsonOpt = False,
) -> None:
    """Resolve every input to exact bytes and write build/<alias>.json (all or nothing)."""
    from enginefab.lock import check as lock_check

    if add_file:
        from enginefab.lock.manual import add_files

        m = _matrix()
        added = add_files(m, add_file)
        if as_json:
            _emit(added)
        for a in added:
            ui.info(f"added {a['name']} sha256 {a['sha256']} ({a['status']})")
        if not (names or all_ or demo or check):
            return
    m = _matrix()
    if check:
        from enginefab.core.paths import downloads_dir

        rep = lock_check.report(m, strict=strict, cache=downloads_dir())
        problems, warnings = rep.problems, rep.warnings
        if as_json:
            _emit(rep.as_dict())
        else:
            for w in warnings:
                ui.err.print(f"[yellow]warning:[/] {w}")
            from rich.markup import escape

            for p in problems:
                ui.err.print(f"[red]problem:[/] {escape(p)}", soft_wrap=True)
            if not problems:
                ui.err.print(f"[green]lock is current[/] ({len(m.images)} images)")
        raise typer.Exit(1 if problems else 0)
    if verify:
        from enginefab.lock.verify import verify as do_verify

        imgs = _pick(m, names, all_ or not (names or demo), demo)
        problems = do_verify(m, imgs)
        if as_json:
            _emit({"ok": not problems, "problems": problems})
        else:
            for p in problems:
                ui.err.print(f"[red]differs:[/] {p}")
            if not problems:
                ui.err.print(f"[green]upstream agrees[/] ({len(imgs)} images)")
        raise typer.Exit(1 if problems else 0)
    from enginefab.assemble import compress
    from enginefab.lock.locker import lock as do_lock  # the resolvers: not needed by --check

    imgs = _pick(m, names, all_ or not (names or demo), demo)
    settings = m.platforms.compression
    res = do_lock(m, imgs, compress.contract(settings.algorithm, settings.level))
    if as_json:
        _emit({"written": res.written, "unchanged": res.unchanged})
    else:
        for a in res.written:
            ui.err.print(f"[green]wrote[/] build/{a}.json")
        for a in res.unchanged:
            ui.err.print(f"[dim]unchanged[/] build/{a}.json")


# -- build ------------------------------------------------------------------------------------


@app.command()
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
    as_json: JsonOpt = False,
) -> None:
    """Build images from build/<alias>.json (or definition files given by path) into the store
    and an OCI layout.

    The last line printed per image is `<alias> <manifest digest>` (with --reachable-layers,
    `<alias> incomplete: …` for an image some of whose inputs cannot be fetched here)."""
    from enginefab.assemble.pipeline import build_images, is_definition_file

    m = _matrix()
    files = [n for n in names or [] if is_definition_file(n)]
    rest = [n for n in names or [] if not is_definition_file(n)]
    imgs = _pick(m, rest, all_, demo) if (rest or all_ or demo or not files) else []
    st = _store(store)
    limits = _archive_limits(archive_max_bytes, archive_max_entries, archive_max_ratio)
    results = build_images(m, imgs, st, out, reachable_only=reachable_layers, files=files,
                           shared=_shared(cache, st, plain_http, ca_cert), limits=limits)
    if as_json:
        _emit([r.as_dict() for r in results])
    else:
        for r in results:
            if r.complete:
                print(f"{r.alias} {r.digest}")
                continue
            for o in r.outcomes:
                if not o.ok:
                    ui.err.print(f"  [yellow]{o.status}[/] {o.id}: {o.error.message if o.error else ''}", soft_wrap=True)
            print(f"{r.alias} incomplete: {r.built + r.cached} of {len(r.outcomes)} layers built here, "
                  f"{r.unreachable} unreachable, {r.blocked} blocked, {r.failed} failed")
    if any(r.failed for r in results):
        raise typer.Exit(2)


@app.command()
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
    from enginefab.assemble.planreport import human, plan as make_plan

    m = _matrix()
    files = [n for n in names or [] if n.endswith(".json") and Path(n).is_file()]
    rest = [n for n in names or [] if n not in files]
    imgs = _pick(m, rest, not rest and not files, False) if (rest or not files) else []
    rep = make_plan(definitions(m, files, imgs), _store(store))
    if as_json:
        _emit(rep)
        return
    from enginefab.cli import plantext

    print("\n".join(plantext.lines(rep, terminal_width())))
    tot = rep["totals"]
    print(f"{tot['images']} images, {tot['layers']} unique layers ({tot['shared_layers']} shared), "
          f"at most {tot['max_layers_per_image']} layers per image (budget {tot['budget']}); sum of image sizes "
          f"{human(tot['sum_of_image_sizes'])}, unique {human(tot['unique_bytes'])}, sharing saves "
          f"{human(tot['saved_by_sharing'])}")


@app.command()
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
    from enginefab.core.paths import project_root

    st = _store(store)
    if churn.is_lock_set(a) and churn.is_lock_set(b):
        res = churn.compare(churn.read_lock(a, project_root()), churn.read_lock(b, project_root()), st, labels=(a, b))
        if as_json:
            _emit(res)
        else:
            for line in churn.render(res):
                print(line)
        raise typer.Exit(0 if res["identical"] else 1)
    sa = d.open_side(a, st, project_root())
    sb = d.open_side(b, st, project_root(), hint=a.rpartition(":")[2] if ":" in a else None)
    res = d.diff(sa, sb, files=not no_files, limit=None if as_json else 40)
    if as_json:
        _emit(res)
    else:
        for line in d.render(res):
            print(line)
    raise typer.Exit(0 if res["identical"] else 1)


@app.command()
@run_guarded
def validate(
    layout: Annotated[Path, typer.Argument(help="An OCI image layout directory.")],
    as_json: JsonOpt = False,
) -> None:
    """Validate an OCI layout against the official OCI JSON schemas (oci-layout, index, every
    manifest and config) and check every blob's digest and size."""
    from enginefab.core import ocischema

    n = ocischema.validate_layout(layout)
    if as_json:
        _emit({"ok": True, "documents": n})
    else:
        ui.err.print(f"[green]valid[/]: {n} documents in {layout}")


# -- check ------------------------------------------------------------------------------------


@app.command()
@run_guarded
def check(
    names: NamesArg = None,
    all_: AllOpt = False,
    demo: DemoOpt = False,
    level: Annotated[Optional[list[str]], typer.Option("--level", help="definition, static, runtime, accelerator (repeatable; default: all).")] = None,
    store: StoreOpt = None,
    junit: Annotated[Optional[Path], typer.Option("--junit", help="Write a JUnit XML report here.")] = None,
    reports: Annotated[Optional[Path], typer.Option("--reports", help="Write each image's JSON report into this directory.")] = None,
    cross_check: Annotated[bool, typer.Option("--cross-check", help="Also run real peers: container-structure-test "
                           "(tar driver) on the static file and metadata tests, podman (runc) on the runtime engine "
                           "probe (host-arch images; the image is pulled into podman's own storage).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Compatibility checks per image; exits 1 if any check fails.

    definition: rules over engines/ and the lock (engines/checks/compat.toml, known-broken.toml).

    static: the built image's files; for an image whose base is out of reach, its fetchable engine layers.

    runtime: the engine imported and run in the sandbox. accelerator: GPU/NPU tests, skipped without one.

    Per-engine checks: engines/checks/<engine>.yaml (container-structure-test schema)."""
    from enginefab.check.runner import run_checks

    m = _matrix()
    imgs = _pick(m, names, all_, demo)
    reps = run_checks(m, imgs, _store(store), levels=level or None, cross_check=cross_check)
    if junit:
        from enginefab.check.report import junit as junit_xml

        junit.parent.mkdir(parents=True, exist_ok=True)
        junit.write_bytes(junit_xml(reps))
    if reports:
        reports.mkdir(parents=True, exist_ok=True)
        for r in reps:
            (reports / f"{r.image}.json").write_bytes(r.to_json())
    if as_json:
        _emit([r.as_dict() for r in reps])
    else:
        for r in reps:
            c = r.counts()
            colour = "green" if r.ok else "red"
            ui.err.print(f"[{colour}]{r.image}[/]: {c['pass']} passed, {c['warn']} warnings, {c['fail']} failed, "
                         f"{c['error']} errors, {c['skip']} skipped")
            for res in r.results:
                mark = {"pass": "[green]✓[/]", "warn": "[yellow]⚠[/]", "fail": "[red]✗[/]", "skip": "[yellow]-[/]",
                        "error": "[red]![/]"}[res.status]
                from rich.markup import escape

                ui.err.print(f"  {mark} {res.level:11} {escape(res.name)}: {escape(res.detail)}", soft_wrap=True)
    if not all(r.ok for r in reps):
        raise typer.Exit(1)


# -- push -------------------------------------------------------------------------------------


@app.command()
@run_guarded
def push(
    names: NamesArg = None,
    all_: AllOpt = False,
    demo: DemoOpt = False,
    to: ToOpt = "",
    plain_http: PlainOpt = False,
    ca_cert: CaOpt = None,
    store: StoreOpt = None,
    parallel: Annotated[int, typer.Option(help="Parallel blob uploads.")] = 4,
    referrers: Annotated[bool, typer.Option("--referrers/--no-referrers", help="Attach SBOM and provenance (and the check report) as referrers.")] = True,
    index: Annotated[bool, typer.Option("--index/--no-index", help="Push a multi-arch index where one engine version is pushed for several arches.")] = True,
    reports: Annotated[Optional[Path], typer.Option("--reports", help="Attach the check reports `enginefab check --reports DIR` wrote.")] = None,
    run_check: Annotated[bool, typer.Option("--check", help="Run the checks now and attach their reports.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Push built images to an OCI registry: tags are the canonical name and the alias; a multi-arch
    index is tagged with the canonical name minus accelerator and arch. Credentials come from
    ENGINEFAB_REGISTRY_USER / ENGINEFAB_REGISTRY_PASSWORD or the docker config."""
    from enginefab.release.pipeline import push as do_push

    m = _matrix()
    imgs = _pick(m, names, all_, demo)
    _require_target(to)
    result = do_push(m, imgs, _store(store), to, plain_http=plain_http, ca_cert=str(ca_cert) if ca_cert else None,
                     parallel=parallel, referrers=referrers, indexes=index, reports=reports, run_check=run_check,
                     limits=_archive_limits(None, None, None))
    if as_json:
        _emit(result)
        return
    for p in result["images"]:
        print(f"{p['alias']} {p['digest']} {p['reference']}")
    for x in result["indexes"]:
        print(f"{x['tag']} {x['digest']} {x['reference']}")
    s = result["stats"]
    ui.err.print(f"uploaded {s['uploaded_bytes']} bytes in {s['uploaded_blobs']} blobs in {s['seconds']:.1f} s "
                 f"({s['bytes_per_second'] / 1e6:.1f} MB/s); {s['skipped']} already present, {s['mounted']} mounted; "
                 f"referrers {s['referrer_bytes']} bytes")


RefArg = Annotated[str, typer.Argument(help="HOST[:PORT]/REPOSITORY[:TAG][@sha256:…]")]
PlatformOpt = Annotated[Optional[str], typer.Option("--platform", help="OS/ARCH[/VARIANT] to pick from a multi-arch index, e.g. linux/arm64.")]


def _client_for(ref: str, plain_http: bool, ca_cert: Optional[Path]):
    from enginefab.transport.client import RegistryClient
    from enginefab.transport.reference import parse_reference

    r = parse_reference(ref)
    return r, RegistryClient(r.registry, plain_http=plain_http, ca_cert=str(ca_cert) if ca_cert else None)


@app.command()
@run_guarded
def pull(
    ref: RefArg,
    out: Annotated[Path, typer.Option("--out", help="OCI image layout to write into (created if needed).")],
    platform: PlatformOpt = None,
    plain_http: PlainOpt = False,
    ca_cert: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Pull an image or a multi-arch index into an OCI layout, verifying every blob's digest."""
    from enginefab.publish.pull import pull as do_pull

    r, client = _client_for(ref, plain_http, ca_cert)
    client.check_login()
    with ui.bytes_progress("pull", None) as bar:
        res = do_pull(client, r, out, platform=platform, progress=bar.advance)
    if as_json:
        _emit(res.as_dict())
        return
    print(f"{res.reference} {res.digest}")
    ui.err.print(f"{res.blobs} blobs verified ({res.downloaded_bytes} bytes downloaded, {res.reused} already in {out})")


@app.command("referrers")
@run_guarded
def referrers_(
    ref: RefArg,
    platform: PlatformOpt = None,
    artifact_type: Annotated[Optional[str], typer.Option("--artifact-type", help="Only referrers of this type.")] = None,
    plain_http: PlainOpt = False,
    ca_cert: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List what is attached to an image (SBOM, provenance, check report): the registry's referrers
    API, or the `sha256-<hex>` fallback tag on registries without it."""
    from enginefab.publish.referrers import resolve_subject, list_referrers

    r, client = _client_for(ref, plain_http, ca_cert)
    client.check_login()
    digest = resolve_subject(client, r, platform)
    descs, how = list_referrers(client, r.repository, digest, artifact_type)
    if as_json:
        _emit({"subject": digest, "source": how, "referrers": descs})
        return
    ui.err.print(f"{r.registry}/{r.repository}@{digest}: {len(descs)} referrers ({how})")
    for d in descs:
        title = (d.get("annotations") or {}).get("org.opencontainers.image.title", "")
        print(f"{d.get('artifactType', '?')} {d['digest']} {d['size']} {title}".rstrip())


# -- store ------------------------------------------------------------------------------------


@store_app.command("verify")
@run_guarded
def store_verify(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Re-hash every blob and check every action-cache entry (temporaries left by killed builds
    are listed, not problems: nothing reads them, gc removes them)."""
    st = _store(store)
    problems = st.verify()
    stale = st.stale()
    if as_json:
        _emit({"ok": not problems, "problems": problems, "stale_temporaries": stale})
    else:
        for p in problems:
            ui.err.print(f"[red]problem:[/] {p}")
        if stale:
            ui.err.print(f"{len(stale)} temporaries of interrupted builds (removed by `enginefab store gc`)")
        if not problems:
            ui.err.print("[green]store is intact[/]")
    raise typer.Exit(1 if problems else 0)


@store_app.command("gc")
@run_guarded
def store_gc(
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
    from enginefab.core.paths import project_root

    res = collect(_store(store), project_root(), keep=tuple(keep or KINDS), layouts=list(layout or []),
                  dry_run=dry_run, wait=not no_wait)
    if as_json:
        _emit(res)
    else:
        verb = "would remove" if dry_run else "removed"
        ui.err.print(f"{verb} {res['removed']} blobs ({res['freed_bytes'] / 1e6:.1f} MB with temporaries), "
                     f"kept {res['kept']} (roots: {', '.join(res['roots'])})")


# -- doctor -----------------------------------------------------------------------------------


@app.command()
def doctor(as_json: JsonOpt = False) -> None:
    """Every external program enginefab runs: found or missing, its package, what needs it.

    Exits 1 when a required one is missing (./dev setup runs this)."""
    from enginefab.cli import doctor as report
    from enginefab.core import tools

    statuses = tools.survey()
    line, ok = report.summary(statuses)
    if as_json:
        _emit(report.as_json(statuses))
    else:
        print("\n".join(report.table(statuses)))
    ui.err.print(line, soft_wrap=True, markup=False)
    raise typer.Exit(0 if ok else 1)


# -- registry ---------------------------------------------------------------------------------


def _registry_state() -> Path:
    from enginefab.core.paths import cache_root

    return cache_root() / "registry"


PortOpt = Annotated[Optional[int], typer.Option("--port", help="Port on 127.0.0.1.", show_default=False)]


@registry_app.command("start")
@run_guarded
def registry_start(port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000, as_json: JsonOpt = False) -> None:
    """Start docker-registry on 127.0.0.1:PORT in the background; prints HOST:PORT. Idempotent per
    port; several ports run side by side. A port another program holds is an error naming it."""
    from enginefab.publish import registries

    r, started = registries.start(_registry_state(), port)
    if as_json:
        _emit({**r.as_dict(), "started": started})
    else:
        print(r.host)
        ui.info(f"{'started' if started else 'already running:'} docker-registry pid {r.pid}, data in {r.root}")


@registry_app.command("list")
@run_guarded
def registry_list(as_json: JsonOpt = False) -> None:
    """The registries `registry start` left running: host, pid, state directory."""
    from enginefab.publish import registries

    up = registries.running(_registry_state())
    if as_json:
        _emit([r.as_dict() for r in up])
        return
    for r in up:
        print(f"{r.host}  pid {r.pid}  {r.root}")
    if not up:
        ui.info("no registry running")


@registry_app.command("stop")
@run_guarded
def registry_stop(port: PortOpt = None,
                  all_: Annotated[bool, typer.Option("--all", help="Every registry `registry start` left running.")] = False,
                  as_json: JsonOpt = False) -> None:
    """Stop a registry `registry start` left running (the only one, --port N, or --all); data is kept."""
    from enginefab.publish import registries

    chosen = registries.choose(_registry_state(), port, all_)
    for r in chosen:
        registries.stop(r)
        ui.info(f"stopped the registry on {r.host}")
    if as_json:
        _emit([r.as_dict() for r in chosen])
    elif not chosen:
        ui.info("no registry running")


# -- render -----------------------------------------------------------------------------------


@render_app.command("dockerfile")
@run_guarded
def render_dockerfile(name: Annotated[str, typer.Argument(help="Alias or canonical name.")],
                      out: Annotated[Path, typer.Option("--out", help="Directory to write the build context into.")]) -> None:
    """An equivalent Dockerfile build context (BuildKit, ADD --checksum) for an image with a base image."""
    from enginefab.core.definition import load_definition
    from enginefab.core.paths import definition_path
    from enginefab.render.generate import dockerfile

    m = _matrix()
    files = dockerfile(load_definition(definition_path(m.root, m.get(name).alias)))
    for rel, text in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    ui.info(f"wrote {out / 'Dockerfile'} and {len(files) - 1} step scripts")


@render_app.command("ci")
@run_guarded
def render_ci(
    github: Annotated[bool, typer.Option("--github", help="A GitHub Actions workflow (the default).")] = False,
    gitlab: Annotated[bool, typer.Option("--gitlab", help="A GitLab CI file.")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write here instead of stdout (with --check: the file "
                                                "to compare; default .github/workflows/engine-images.yml or .gitlab-ci.yml).")] = None,
    check: Annotated[bool, typer.Option("--check", help="Write nothing; exit 1 if the file differs from what would be written.")] = False,
    runner: Annotated[Optional[list[str]], typer.Option("--runner", help="ARCH=LABEL: the runs-on label (GitHub) or runner "
                                                        "tag (GitLab) for images of that arch (repeatable).")] = None,
) -> None:
    """CI with lock --check once, then one build-check-push job per image on a runner of its arch
    (push only for a tag), using the shared action cache when ENGINEFAB_CACHE is set."""
    from enginefab.core.errors import EnginefabError
    from enginefab.render.generate import CI_PATHS, parse_runners, render_ci as generate

    if github and gitlab:
        raise EnginefabError("--github and --gitlab are two files", fix="render one at a time")
    system = "gitlab" if gitlab else "github"
    path = out or (Path(CI_PATHS[system]) if check else None)
    text = generate(_matrix(), system, str(path or CI_PATHS[system]), parse_runners(runner or []))
    if check:
        have = path.read_text() if path.is_file() else None
        if have != text:
            flag = f"--{system} --out {path}" + "".join(f" --runner {r}" for r in runner or [])
            why = "is missing" if have is None else "is stale: it is not what the matrix (and these options) give now"
            ui.err.print(f"[red]{path} {why}[/]; run `enginefab render ci {flag}` and commit it", soft_wrap=True)
            raise typer.Exit(1)
        ui.info(f"{path} is up to date")
    elif path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    else:
        sys.stdout.write(text)


# -- release ----------------------------------------------------------------------------------


@app.command()
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
    from enginefab.release.dryrun import lines as dry_lines
    from enginefab.release.pipeline import Options, release as do_release

    _require_target(to)
    m = _matrix()
    imgs = _pick(m, names, all_, demo)
    st = _store(store)
    opts = Options(plain_http=plain_http, ca_cert=str(ca_cert) if ca_cert else None, levels=level or None,
                   reports_dir=reports, record=record, notes_dir=notes or out.parent / "release", since=since,
                   tag=tag, dry_run=dry_run, shared=_shared(cache, st, plain_http, ca_cert),
                   limits=_archive_limits(None, None, None))
    rel = do_release(m, imgs, st, out, to, opts)
    if as_json:
        _emit(rel.as_dict())
    elif rel.ok and rel.dry_run is not None:
        print("\n".join(dry_lines(rel.dry_run, to)))
    elif rel.ok:
        for p in rel.images:
            print(f"{p['alias']} {p['digest']} {p['reference']}")
        for x in rel.indexes:
            print(f"{x['tag']} {x['digest']} {x['reference']}")
        if not rel.published:
            print("already released: the registry has every tag and referrer of this lock; nothing published")
    else:
        from rich.markup import escape

        ui.err.print(f"[red]release stopped at {rel.stage}[/]: nothing was pushed")
        for p in rel.problems:
            ui.err.print(f"  [red]✗[/] {escape(p)}", soft_wrap=True)
    if not rel.ok:
        raise typer.Exit(1)


@app.command()
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

    m = _matrix()
    doc = write_report(m, _pick(m, names, all_, demo), _store(store), out, reports=reports, record=record,
                       plain_http=plain_http)
    if as_json:
        _emit(doc)
    else:
        print(out)


# -- demo -------------------------------------------------------------------------------------


@app.command()
@run_guarded
def demo(
    port: Annotated[int, typer.Option(help="Port of the local registry on 127.0.0.1.")] = 5000,
    out: Annotated[Path, typer.Option("--out", help="OCI layout to build into.")] = Path("out"),
    store: StoreOpt = None,
) -> None:
    """The whole pipeline on the demo images: lock --check, build, check, push to a local registry."""
    from enginefab.demo import run_demo

    raise typer.Exit(run_demo(port=port, out=out, store=store))


# -- nix --------------------------------------------------------------------------------------


@nix_app.command("build-layer")
@run_guarded
def nix_build_layer(
    layer: Annotated[Path, typer.Option("--layer", envvar="layerPath", help="The layer object from the lock (JSON).")],
    compression: Annotated[str, typer.Option("--compression", envvar="compression", help="The compression contract (JSON).")],
    source_date_epoch: Annotated[int, typer.Option("--source-date-epoch", envvar="sourceDateEpoch")],
    inputs: Annotated[Path, typer.Option("--inputs", envvar="inputsPath", help="JSON {sha256: store path} of its fetches.")],
    out: Annotated[Path, typer.Option("--out", envvar="out", help="Directory to create: blob, descriptor.json.")],
    lower: Annotated[Optional[Path], typer.Option("--lower", envvar="lowerPath",
                                                  help="Run steps: JSON list of the parts below.")] = None,
    arch: Annotated[str, typer.Option("--arch", envvar="arch", help="Run steps: the image's architecture.")] = "",
) -> None:
    """Build one layer of a definition, without network (the flake's layer derivations).

    Prints `<layer id> <blob digest>`."""
    from enginefab.core.definition import Compression, Layer
    from enginefab.nix.layer import LayerJob, build_layer
    from enginefab.nix.parts import read_inputs, read_parts

    job = LayerJob(layer=Layer.model_validate_json(layer.read_bytes()),
                   compression=Compression.model_validate_json(compression), source_date_epoch=source_date_epoch,
                   inputs=read_inputs(inputs), lower=tuple(read_parts(lower)) if lower else (), arch=arch)
    entry = build_layer(job, out)
    print(f"{job.layer.id} {entry['digest']}")


@nix_app.command("assemble")
@run_guarded
def nix_assemble(
    definition: Annotated[Path, typer.Option("--definition", help="The image's build/<alias>.json.")],
    layers: Annotated[Path, typer.Option("--layers", envvar="layersPath", help="JSON list of the image's parts.")],
    inputs: Annotated[Path, typer.Option("--inputs", envvar="inputsPath", help="JSON {sha256: store path}: the base's config.")],
    out: Annotated[Path, typer.Option("--out", envvar="out", help="The OCI layout to create.")],
) -> None:
    """Write an image's config, manifest and OCI layout from its layer derivations' outputs.

    Prints `<alias> <manifest digest>`, as `enginefab build` does."""
    from enginefab.core.definition import load_definition
    from enginefab.nix.assemble import assemble
    from enginefab.nix.parts import read_inputs, read_parts

    defn = load_definition(definition)
    built = assemble(defn, read_parts(layers), read_inputs(inputs), out)
    print(f"{defn.image.alias} {built.digest}")


@nix_app.command("missing-input")
@run_guarded
def nix_missing_input(
    kind: Annotated[str, typer.Argument(help="manual, awaiting, unresolved or unpinned.")],
    input_json: Annotated[str, typer.Option("--input", envvar="input", help="The input from the lock (JSON).")],
) -> None:
    """Fail with what a user must do to supply an input (the flake's manual-input derivations)."""
    from enginefab.core.definition import Input
    from enginefab.nix.missing import missing_input

    raise missing_input(kind, Input.model_validate_json(input_json))


@nix_app.command("flake-check")
@run_guarded
def nix_flake_check(
    name: Annotated[str, typer.Argument(help="lock or definitions.")],
    root: Annotated[Path, typer.Option("--root", envvar="ENGINEFAB_ROOT", help="The matrix (engines/, build/).")],
    out: Annotated[Path, typer.Option("--out", envvar="out", help="Where to write the JSON report.")],
) -> None:
    """One of `nix flake check`'s checks: the JSON report to --out; exit 1 (report on stderr) if it fails."""
    from enginefab.nix.checks import flake_check

    ok, report = flake_check(name, root)
    out.write_bytes(report)
    if not ok:
        sys.stderr.buffer.write(report)
        raise typer.Exit(1)


@nix_app.command("fetch-blob")
@run_guarded
def nix_fetch_blob(
    reference: Annotated[str, typer.Argument(help="NAME@sha256:HEX, as the lock's oci inputs have it.")],
    size: Annotated[int, typer.Option("--size", help="Expected size in bytes (progress only; 0: unknown).")] = 0,
    out: Annotated[Path, typer.Option("--out", envvar="out", help="Where to write the blob.")] = Path("blob"),
) -> None:
    """Fetch one base-image blob from its registry (or mirror): the flake's fixed-output fetcher."""
    from enginefab.nix.fetch import fetch_blob

    fetch_blob(reference, size, out)


def main() -> None:  # pragma: no cover
    app()
