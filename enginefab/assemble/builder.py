"""Build images from pinned definitions into the store, layer by layer, through the action cache.

Each layer has a key (`keys.chain_keys`: the layer object from the lock, the builder version, the
compression contract, SOURCE_DATE_EPOCH, and for run steps the keys of the layers below). A key
found in the action cache whose blob is still in the store costs one stat; otherwise the layer's
inputs are fetched (verified against their sha256), staged, packed, written to the store and
recorded. A no-op rebuild of the whole matrix therefore reads no layer bytes.

`build_layers(..., keep_going=True)` builds every layer it can and reports the others: an input
that cannot be fetched here makes its layer *unreachable*, and a run step over such a layer is
*blocked* (it needs the filesystem below it).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence, TypeVar

from enginefab import __version__
from enginefab.assemble import compress
from enginefab.assemble.archives import stage_archive
from enginefab.assemble.debs import stage_deb
from enginefab.assemble.fetching import Fetcher, InputUnreachable, SessionFetcher, fetch_input
from enginefab.assemble.limits import DEFAULT as DEFAULT_LIMITS
from enginefab.assemble.limits import ArchiveLimits
from enginefab.assemble.image import Built, LayerDesc, config_json, manifest_json
from enginefab.assemble.explain import DECLARED
from enginefab.assemble.keys import BUILDER_VERSION, chain_keys, is_layer_media, layer_key  # noqa: F401 (re-exported)
from enginefab.assemble.remote import SharedCache
from enginefab.assemble.runstep import build_run_layer
from enginefab.assemble.staging import Staging, as_given
from enginefab.assemble.store import Store
from enginefab.assemble.tarball import pack
from enginefab.assemble.wheels import stage_wheel
from enginefab.core.definition import Definition, Input, Layer
from enginefab.core.errors import BuildError, EnginefabError, FetchError, PinMismatch, UnsafeArchiveError
from enginefab.core.reporter import SILENT, Reporter
from enginefab.core.settings import RUN_TIMEOUT
from enginefab.transport.session import Session

__all__ = ["BUILDER_VERSION", "Builder", "InputUnreachable", "LayerOutcome", "Stats", "fetch_input", "layer_key"]


@dataclass
class Stats:
    layers_built: int = 0
    layers_cached: int = 0
    layers_pulled: int = 0  # from the shared cache
    bytes_packed: int = 0  # uncompressed tar bytes written
    notes: list[str] = field(default_factory=list)


@dataclass
class LayerOutcome:
    """What happened to one layer of one image."""

    id: str
    kind: str
    key: str
    status: str  # built | cached | pulled (shared cache) | fetched (base blobs) | unreachable | blocked | failed
    descs: list[LayerDesc] = field(default_factory=list)
    error: EnginefabError | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in ("built", "cached", "pulled", "fetched")

    def as_dict(self) -> dict:
        d: dict = {"id": self.id, "kind": self.kind, "key": self.key, "status": self.status,
                   "seconds": round(self.seconds, 3)}
        if self.descs:
            d["digests"] = [x.digest for x in self.descs]
            d["size"] = sum(x.size for x in self.descs)
        if self.error is not None:
            d["error"] = self.error.message
            d["input"] = self.error.input
        return d


T = TypeVar("T")


class Progress(Protocol):
    def layer(self, image: str, layer: Layer, index: int, total: int) -> None: ...
    def advance(self, nbytes: int) -> None: ...
    def done(self, image: str, outcome: LayerOutcome) -> None: ...


class QuietProgress:
    """Reports nothing (subclass it to report some of it)."""

    def layer(self, image: str, layer: Layer, index: int, total: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def done(self, image: str, outcome: LayerOutcome) -> None:
        pass


def is_config_media(mt: str | None) -> bool:
    return mt in ("application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json")


#: a derived image's matrix parent by alias → its current definition (built first when needed)
Parents = Callable[[str], Definition]


class Builder:
    def __init__(self, store: Store, fetcher: Fetcher | None = None, *, session: Session | None = None,
                 progress: Progress | None = None,
                 shared: SharedCache | None = None, limits: ArchiveLimits = DEFAULT_LIMITS,
                 threads: int | None = None, run_timeout: float = RUN_TIMEOUT,
                 creation_order: Callable[[Sequence[T]], list[T]] = as_given,
                 parents: Parents | None = None) -> None:
        """`threads`: compression threads per layer (None: the CPUs this process may use);
        `run_timeout`: seconds a run step may take; `creation_order`: the order stagers create
        files in (never reaching a layer; `staging.in_reverse` proves it). Inputs come from
        `fetcher`, else through `session` (its download cache, mirrors); messages go to the
        session's reporter."""
        if fetcher is None and session is None:
            raise TypeError("a Builder needs a fetcher or a session to fetch inputs through")
        self.store = store
        self.parents = parents
        self.shared = shared
        self.limits = limits
        self.threads = threads
        self.run_timeout = run_timeout
        self.order = creation_order
        self.fetch = fetcher or SessionFetcher(session)  # type: ignore[arg-type]
        self.reporter: Reporter = session.reporter if session else SILENT
        self.stats = Stats()
        self.progress: Progress = progress or QuietProgress()

    def fetch_input(self, inp: Input, image: str) -> Path:
        """The verified local file of `inp`; InputUnreachable when it cannot be had here."""
        try:
            return self.fetch(inp, image)
        except (InputUnreachable, UnsafeArchiveError, PinMismatch):  # fetched, but not the pinned bytes: a failure
            raise
        except (FetchError, BuildError) as e:
            raise InputUnreachable(e.message, image=e.image or image, input=e.input or inp.ref, fix=e.fix) from None

    # -- layers ---------------------------------------------------------------------------
    def build_layers(self, defn: Definition, *, keep_going: bool = False) -> list[LayerOutcome]:
        """Every layer of `defn` in order. Without keep_going the first failure raises."""
        image = defn.image.alias
        outcomes: list[LayerOutcome] = []
        lower: list[LayerDesc] = []
        broken: LayerOutcome | None = None  # the first layer below that did not build
        keys = chain_keys(defn)
        for n, (layer, key) in enumerate(zip(defn.layers, keys)):
            self.progress.layer(image, layer, n, len(defn.layers))
            t0 = time.monotonic()
            if layer.kind == "run" and broken is not None:
                err = InputUnreachable(f"run step {layer.id} runs over layer {broken.id}, which is {broken.status}",
                                       image=image, input=broken.error.input if broken.error else None)
                out = LayerOutcome(layer.id, layer.kind, key, "blocked", error=err)
            else:
                try:
                    if layer.kind == "base":
                        descs, status = self._base(defn, layer)
                    else:
                        descs, status = self._layer(defn, layer, key, lower)
                    out = LayerOutcome(layer.id, layer.kind, key, status, descs)
                except InputUnreachable as e:
                    e.image = e.image or image
                    if not keep_going:
                        raise
                    out = LayerOutcome(layer.id, layer.kind, key, "unreachable", error=e)
                except EnginefabError as e:
                    e.image = e.image or image
                    if not keep_going:
                        raise
                    out = LayerOutcome(layer.id, layer.kind, key, "failed", error=e)
            out.seconds = time.monotonic() - t0
            if not out.ok and broken is None:
                broken = out
            lower.extend(out.descs)
            outcomes.append(out)
            self.progress.done(image, out)
        return outcomes

    def _layer(self, defn: Definition, layer: Layer, key: str, lower: list[LayerDesc]) -> tuple[list[LayerDesc], str]:
        """From the store's action cache, else the shared cache, else packed here (and shared)."""
        created_by = f"enginefab {__version__}: {layer.kind} {layer.id}"
        status = "cached"
        hit = self.store.action_get(key)
        if hit is None:
            with self.store.lock(key):
                hit = self.store.action_get(key)  # another build may have made it meanwhile
                if hit is None and self.shared is not None:
                    hit = self.shared.pull(defn, layer, key)
                    status = "pulled"
                if hit is None:
                    hit = self.pack_layer(defn, layer, key, lower)
                    status = "built"
                    if self.shared is not None:
                        self.shared.publish(key, hit)
        elif self.shared is not None:
            self.shared.publish(key, hit, unless_present=True)  # packed before this store shared it
        counter = {"built": "layers_built", "cached": "layers_cached", "pulled": "layers_pulled"}[status]
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        comment = layer.comment + (f" ({DECLARED} {layer.unreproducible})" if layer.unreproducible else "")
        return [LayerDesc(hit["media_type"], hit["digest"], hit["size"], hit["diff_id"], created_by, comment)], status

    def pack_layer(self, defn: Definition, layer: Layer, key: str, lower: list[LayerDesc]) -> dict:
        """Fetch, stage and pack one layer (not a base) over `lower` (blobs in the store) into the
        store under `key`, whatever the cache holds: its action-cache entry. (A Nix layer
        derivation calls this in a fresh store.)"""
        stage_root = self.store.tmp_dir(f"stage-{key[:16]}")
        staging = Staging(stage_root, limits=self.limits)
        try:
            self._stage(defn, layer, staging, lower)
            with self.store.writer() as (out, commit):
                packed = pack(staging, defn.compression, defn.source_date_epoch, out, on_bytes=self.progress.advance,
                              threads=self.threads)
                commit(packed.digest)
        except OSError as e:
            if stage_root.is_dir():
                raise
            raise BuildError(f"layer {layer.id}: its staging directory {stage_root} was removed while the layer was "
                             f"being built ({e.strerror or e})", image=defn.image.alias,
                             fix="something outside enginefab deleted files under the store's tmp/ (a tmp cleaner, "
                             "`rm`, another tool): keep the store out of its reach and build again") from None
        finally:
            shutil.rmtree(stage_root, ignore_errors=True)
        self.stats.bytes_packed += packed.tar_size
        self.stats.notes.extend(staging.notes)
        entry = {
            "media_type": compress.MEDIA_TYPES[defn.compression.algorithm],
            "digest": packed.digest,
            "diff_id": packed.diff_id,
            "size": packed.size,
            "tar_size": packed.tar_size,
            "layer": layer.id,
        }
        self.store.action_put(key, entry)
        return entry

    def _stage(self, defn: Definition, layer: Layer, staging: Staging, lower: list[LayerDesc]) -> None:
        image = defn.image.alias
        if layer.kind == "debs":
            for inp in self.order(sorted(layer.inputs, key=lambda i: i.name)):
                stage_deb(staging, self.fetch_input(inp, image), inp)
        elif layer.kind == "wheels":
            if not layer.scheme or not layer.interpreter:
                raise BuildError(f"wheel layer {layer.id} has no scheme", image=image)
            for inp in self.order(sorted(layer.inputs, key=lambda i: i.name)):
                stage_wheel(staging, self.fetch_input(inp, image), inp, layer.scheme, layer.interpreter)
        elif layer.kind == "archives":
            for inp in self.order(layer.inputs):
                stage_archive(staging, self.fetch_input(inp, image), input=inp.ref, dest=inp.dest or "/",
                              filename=inp.filename or inp.name, unpack=inp.unpack, strip=inp.strip_components)
        elif layer.kind == "files":
            for fe in self.order(sorted(layer.files, key=lambda f: f.path)):
                label = f"files:{layer.id}"
                rel = staging.clean(fe.path.lstrip("/"), input=label)
                if fe.type == "dir":
                    staging.mkdir(rel, fe.mode, fe.uid, fe.gid, input=label)
                elif fe.type == "symlink":
                    staging.symlink(rel, fe.target or "", fe.uid, fe.gid, input=label)
                else:
                    staging.write_file(rel, (fe.content or "").encode(), fe.mode, fe.uid, fe.gid, input=label)
        elif layer.kind == "run":
            build_run_layer(self, defn, layer, staging, lower)
        else:  # pragma: no cover - the model forbids other kinds
            raise BuildError(f"unknown layer kind {layer.kind}", image=image)

    def _base(self, defn: Definition, layer: Layer) -> tuple[list[LayerDesc], str]:
        """Base image layers: the registry's blobs, byte for byte (verified, never recompressed);
        a derived image's matrix parent is built first when its blobs are not in the store."""
        out = []
        status = "cached"
        if defn.parent and defn.parent.alias and not all(
                self.store.intact("sha256:" + (i.sha256 or ""), i.size) for i in layer.inputs
                if is_layer_media(i.media_type) or is_config_media(i.media_type)):
            self._build_parent(defn)
        for inp in layer.inputs:
            if not is_layer_media(inp.media_type):  # the base's index, manifest or config
                continue
            digest = "sha256:" + (inp.sha256 or "")
            if not self.store.intact(digest, inp.size):
                self.store.discard(digest)  # missing, or damaged: fetched again, never used
                got = self.store.put_file(self.fetch_input(inp, defn.image.alias))
                if got.digest != digest:
                    raise BuildError(f"the base layer {inp.name} fetched as {got.digest}, not {digest}",
                                     image=defn.image.alias, input=inp.ref, fix="the registry or mirror serves "
                                     "other bytes than the pinned ones")
                status = "fetched"
            out.append(LayerDesc(inp.media_type or "", digest, inp.size, inp.diff_id or "", f"base: {inp.name}"))
        if not out:
            raise InputUnreachable(
                f"the base {defn.base.reference if defn.base else '?'} is pinned by digest but its layers "
                "were never resolved (its registry was unreachable when locking)",
                image=defn.image.alias,
                input=f"oci:{defn.base.reference}@{defn.base.digest}" if defn.base else None,
                fix="run `enginefab lock` where the registry (or a mirror in registry/mirrors.toml) is reachable",
            )
        return out, status

    # -- images ---------------------------------------------------------------------------
    def image(self, defn: Definition) -> Built:
        compress.verify(defn.compression, image=defn.image.alias, store=self.store)
        outcomes = self.build_layers(defn)
        return self.assemble(defn, [d for o in outcomes for d in o.descs])

    def assemble(self, defn: Definition, layers: list[LayerDesc]) -> Built:
        """Config and manifest of an image whose layers are in the store."""
        base_config = None
        if (defn.base or defn.parent) and defn.layers and defn.layers[0].kind == "base":
            base_config = self._base_config(defn)
        config = config_json(defn, layers, base_config)
        cfg = self.store.put_bytes(config)
        manifest = manifest_json(defn, config, layers)
        self.store.put_bytes(manifest)
        return Built(
            name=defn.image.name,
            alias=defn.image.alias,
            manifest=manifest,
            platform=dict(defn.image.platform),
            blobs=(cfg.digest, *[ld.digest for ld in layers]),
        )

    def _base_config(self, defn: Definition) -> dict | None:
        for inp in defn.layers[0].inputs:
            if is_config_media(inp.media_type):
                digest = "sha256:" + (inp.sha256 or "")
                if self.store.intact(digest, inp.size):  # a matrix parent's, built here
                    return json.loads(self.store.read(digest))
                return json.loads(self.fetch_input(inp, defn.image.alias).read_bytes())
        return None

    def _build_parent(self, defn: Definition) -> None:
        """Build a derived image's matrix parent into the store; it must be the parent it was locked over."""
        assert defn.parent is not None and defn.parent.alias
        alias, child = defn.parent.alias, defn.image.alias
        if self.parents is None:
            raise InputUnreachable(f"the layers of its parent {alias} are not in this store", image=child,
                                   input=f"from = {alias}", fix=f"run `enginefab build {alias}` first")
        self.reporter.info(f"  {child}: building its parent {alias} first")
        built = self.image(self.parents(alias))
        if built.digest != defn.parent.manifest:
            raise BuildError(f"its parent {alias} changed since it was locked (locked {defn.parent.manifest}, "
                             f"now {built.digest})", image=child, input=f"from = {alias}",
                             fix=f"run `enginefab lock {child}`")


def report(stats: Stats, reporter: Reporter) -> None:
    for n in stats.notes:
        reporter.info(f"[dim]normalized: {n}[/]")
