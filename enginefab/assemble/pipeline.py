"""`enginefab build`: definitions → store → one OCI layout holding every image built.

Images come from the matrix (build/<alias>.json, refused when stale) or from definition files
given by path. With `reachable_only`, every layer whose inputs can be had here is built and the
others are reported (unreachable input, or a run step blocked by one below it); only complete
images get a manifest and a place in the layout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from rich.console import Console

from enginefab.assemble import compress
from enginefab.assemble.builder import Builder, InputUnreachable, LayerOutcome, Parents, QuietProgress, report
from enginefab.assemble.image import Built, write_layout
from enginefab.assemble.limits import DEFAULT as DEFAULT_LIMITS
from enginefab.assemble.limits import ArchiveLimits
from enginefab.assemble.index import add_to_layout, layout_members, plan_indexes
from enginefab.assemble.remote import SharedCache
from enginefab.assemble.staging import as_given
from enginefab.assemble.store import Store
from enginefab.core.definition import Definition, Layer, load_definition
from enginefab.core.errors import BuildError
from enginefab.core.paths import definition_path
from enginefab.core.reporter import Reporter
from enginefab.core.settings import RUN_TIMEOUT, Settings
from enginefab.core.ui import RichReporter
from enginefab.engines.matrix import Image, Matrix
from enginefab.lock.check import parent_changes
from enginefab.lock.declared import matrix_entry
from enginefab.transport.session import Session

T = TypeVar("T")


@dataclass
class BuildResult:
    alias: str
    name: str
    digest: str | None  # None: not every layer could be built here
    layers: int
    built: int
    cached: int
    seconds: float
    layout: str
    unreachable: int = 0
    blocked: int = 0
    failed: int = 0
    pulled: int = 0  # layers the shared cache (--cache) had, not packed here
    outcomes: list[LayerOutcome] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.digest is not None

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "outcomes"}
        d["layer_results"] = [o.as_dict() for o in self.outcomes]
        return d


def definition_for(m: Matrix, img: Image) -> Definition:
    defn = load_definition(definition_path(m.root, img.alias))
    if defn.matrix != matrix_entry(img, m):
        raise BuildError(
            f"build/{img.alias}.json is stale: engines/ changed since it was locked",
            image=img.alias,
            fix=f"run `enginefab lock {img.alias}` (and review the diff), or `enginefab lock --check` for details",
        )
    changed = parent_changes(defn, img, m)
    if changed:
        what, _, fix = changed[0].rpartition("; ")
        raise BuildError(f"build/{img.alias}.json is stale: its {what}", image=img.alias, fix=fix)
    return defn


def matrix_parents(m: Matrix):
    """A derived image's matrix parent by alias → its current definition (the builder builds it
    first when its layers are not in the store)."""
    return lambda alias: definition_for(m, m.get(alias))


def is_definition_file(name: str) -> bool:
    return name.endswith(".json") and Path(name).is_file()


def definitions(m: Matrix | None, names: list[str], imgs: list[Image]) -> list[Definition]:
    """Definition files named by path, then the matrix images, in the order given."""
    out = [load_definition(Path(n)) for n in names if is_definition_file(n)]
    if m is not None:
        out += [definition_for(m, img) for img in imgs]
    return out


class _Bars:
    """Progress on stderr (a terminal only): layers done of all, bytes packed of the current one."""

    def __init__(self, total_layers: int, console: Console) -> None:
        from rich.console import Group
        from rich.live import Live
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        self.console = console
        self.p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                          console=console, transient=True)
        self.bytes = Progress(TextColumn("  {task.description}"), DownloadColumn(), TransferSpeedColumn(),
                              console=console, transient=True)
        self.layers = self.p.add_task("layers", total=total_layers)
        self.current = None
        self.live = Live(Group(self.p, self.bytes), console=console, transient=True, refresh_per_second=8)

    def __enter__(self) -> _Bars:
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.live.__exit__(*exc)

    def layer(self, image: str, layer: Layer, index: int, total: int) -> None:
        self.p.update(self.layers, description=f"{image} {layer.id}")
        if self.current is not None:
            self.bytes.remove_task(self.current)
        self.current = self.bytes.add_task(f"{layer.kind} {layer.id}", total=None)

    def advance(self, nbytes: int) -> None:
        if self.current is not None:
            self.bytes.advance(self.current, nbytes)

    def done(self, image: str, outcome: LayerOutcome) -> None:
        self.p.advance(self.layers)
        mark = {"built": "[green]built[/]", "cached": "[dim]cached[/]", "fetched": "[green]fetched[/]",
                "pulled": "[cyan]pulled[/]"}.get(
            outcome.status, f"[yellow]{outcome.status}[/]")
        if outcome.status not in ("cached",):
            self.console.print(f"  {mark} {outcome.id} ({outcome.seconds:.1f} s)")


class _Lines(QuietProgress):
    """Without a terminal: one line per layer that did something."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def done(self, image: str, outcome: LayerOutcome) -> None:
        if outcome.status != "cached":
            self.reporter.info(f"  {outcome.status} {outcome.id} ({outcome.seconds:.1f} s)")


@dataclass(frozen=True)
class BuildOptions:
    """How the builder works, from the settings (`core.settings`): none of it reaches a layer."""

    limits: ArchiveLimits = DEFAULT_LIMITS
    threads: int | None = None
    run_timeout: float = RUN_TIMEOUT
    creation_order: Callable[[Sequence[T]], list[T]] = as_given

    @classmethod
    def of(cls, settings: Settings, **kw) -> BuildOptions:
        return cls(limits=settings.archive, threads=settings.threads, run_timeout=settings.run_timeout, **kw)


def build_images(m: Matrix, imgs: list[Image], store: Store, out: Path, session: Session, *,
                 reachable_only: bool = False, files: list[str] | None = None, shared: SharedCache | None = None,
                 options: BuildOptions = BuildOptions()) -> list[BuildResult]:
    """Build matrix images (and definition files) into `store` and the layout `out`, fetching
    through `session`; where the layout now holds one engine version for several arches, add
    their multi-arch index. With `shared`, layers missing from the store are pulled from the
    shared cache when it has them, and the layers packed here are written to it."""
    results = build_definitions(definitions(m, list(files or []), imgs), store, out, session,
                                reachable_only=reachable_only, shared=shared, options=options, parents=matrix_parents(m))
    if (out / "index.json").is_file():
        write_indexes(m, out, session.reporter)
    return results


def write_indexes(m: Matrix, out: Path, reporter: Reporter) -> None:
    plans, notes = plan_indexes(layout_members(out, m.images))
    add_to_layout(out, plans)
    for p in plans:
        arches = ", ".join(f"{mm.platform['architecture']}: {mm.alias}" for mm in p.members)
        reporter.info(f"[bold]index[/] {p.tag} {p.digest} ({arches})")
    for n in notes:
        reporter.warn(n)


def _progress(reporter: Reporter, total_layers: int) -> _Bars | None:
    """Bars when the reporter is the rich one on a terminal; else None (one line per layer)."""
    if isinstance(reporter, RichReporter) and reporter.interactive:
        return _Bars(total_layers, reporter.console)
    return None


def build_definitions(defns: list[Definition], store: Store, out: Path, session: Session, *,
                      reachable_only: bool = False, shared: SharedCache | None = None,
                      options: BuildOptions = BuildOptions(), parents: Parents | None = None) -> list[BuildResult]:
    reporter = session.reporter
    bars = _progress(reporter, sum(len(d.layers) for d in defns))
    builder = Builder(store, session=session, progress=bars or _Lines(reporter), shared=shared, limits=options.limits,
                      threads=options.threads, run_timeout=options.run_timeout, creation_order=options.creation_order,
                      parents=parents)
    results: list[BuildResult] = []
    with store.using():
        if bars is not None:
            bars.__enter__()
        try:
            for defn in defns:
                results.append(_one(builder, defn, store, out, reachable_only))
        finally:
            if bars is not None:
                bars.__exit__(None, None, None)
        if any(r.complete for r in results):
            store.add_root(out)
    report(builder.stats, reporter)
    if shared is not None:
        c = shared.summary()
        reporter.info(f"shared cache {c['cache']}: {c['pulled']} layers pulled ({c['bytes_pulled']} bytes), "
                f"{c['published']} written ({c['bytes_sent']} bytes sent)" + (" — it was down" if c["down"] else ""))
    return results


def _one(builder: Builder, defn: Definition, store: Store, out: Path, reachable_only: bool) -> BuildResult:
    alias = defn.image.alias
    builder.reporter.info(f"[bold]build[/] {alias} ({defn.image.name})")
    t0 = time.monotonic()
    compress.verify(defn.compression, image=alias, store=store)
    try:
        outcomes = builder.build_layers(defn, keep_going=reachable_only)
    except InputUnreachable as e:
        e.fix = (e.fix + "; " if e.fix else "") + f"or build the layers that can be built here: " \
            f"`enginefab build --reachable-layers {alias}`"
        raise
    count = {s: sum(o.status == s for o in outcomes)
             for s in ("built", "cached", "pulled", "unreachable", "blocked", "failed")}
    digest = None
    layer_count = sum(len(o.descs) for o in outcomes)
    if all(o.ok for o in outcomes):
        b: Built = builder.assemble(defn, [d for o in outcomes for d in o.descs])
        write_layout(out, [b], store.checked_path)  # a damaged blob never reaches a layout
        digest = b.digest
        layer_count = len(b.blobs) - 1
    return BuildResult(alias=alias, name=defn.image.name, digest=digest, layers=layer_count, built=count["built"],
                       cached=count["cached"], seconds=round(time.monotonic() - t0, 3), layout=str(out),
                       unreachable=count["unreachable"], blocked=count["blocked"], failed=count["failed"],
                       pulled=count["pulled"], outcomes=outcomes)
