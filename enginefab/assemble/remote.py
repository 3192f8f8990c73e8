"""A shared action cache (a registry, for CI runners): read before packing, written after.

The builder asks `SharedCache.pull(key)` when its own store has no entry for a layer key: an
entry found remotely is trusted for nothing but its claims, each checked on the way in —

* the entry is for this key, this layer and this definition's compression (media type);
* the blob streams into the store hashed as it comes, never more than its size, and lands only
  if digest and size match;
* its uncompressed bytes hash to the entry's diff_id (what the image config will say);

only then is the entry written to the local action cache. Anything else is refused with a note
and the layer is packed here (and the remote entry replaced by ours).

A cache that is down slows a build and never fails it: every remote call is bounded by the
transport's timeouts, and the first failure to reach it turns the cache off for the rest of
the build (one note, not one wait per layer). The registry side is a `RemoteCache`;
`transport/actioncache.py` implements it, `cli/` wires it (assemble never imports publish).
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol

from rich.markup import escape

from enginefab.assemble import compress
from enginefab.assemble.store import Store
from enginefab.core.definition import Definition, Layer
from enginefab.core.errors import EnginefabError
from enginefab.core.reporter import SILENT, Reporter
from enginefab.transport.actioncache import BadEntry
from enginefab.transport.errors import Mismatch, TransportFailed

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
#: the fields of an action entry that travel (and nothing else)
FIELDS = ("digest", "diff_id", "layer", "media_type", "size", "tar_size")


class RemoteCache(Protocol):
    where: str

    def lookup(self, key: str) -> tuple[dict, dict] | None: ...
    def blob(self, digest: str, size: int) -> Iterator[bytes]: ...
    def has(self, key: str) -> bool: ...
    def publish(self, key: str, entry: dict, blob: Path) -> int: ...


class Refused(EnginefabError):
    """A remote entry that does not hold what it claims."""


class _Unpacked:
    """sha256 of a layer's uncompressed bytes, fed compressed chunks (gzip members or zstd frames)."""

    def __init__(self, media_type: str) -> None:
        self.zstd = media_type.endswith("+zstd")
        self.h = hashlib.sha256()
        self.d = self._new()

    def _new(self):
        if self.zstd:
            import zstandard

            return zstandard.ZstdDecompressor().decompressobj()
        return zlib.decompressobj(wbits=31)

    def feed(self, chunk: bytes) -> None:
        try:
            while chunk:
                self.h.update(self.d.decompress(chunk))
                chunk = self.d.unused_data if self.d.eof else b""
                if self.d.eof:
                    self.d = self._new()
        except Exception as e:  # zlib.error, zstandard.ZstdError: bytes that are not a layer
            raise Refused(f"its blob does not decompress ({e})") from None

    def digest(self) -> str:
        return "sha256:" + self.h.hexdigest()


@dataclass
class SharedCache:
    remote: RemoteCache
    store: Store
    pulled: int = 0
    published: int = 0
    bytes_pulled: int = 0
    bytes_sent: int = 0
    down: str | None = None  # why the cache was turned off for this build
    read_only: str | None = None  # why writing to it was (e.g. read-only credentials)
    notes: list[str] = field(default_factory=list)
    reporter: Reporter = SILENT

    def _note(self, msg: str) -> None:
        self.notes.append(msg)
        self.reporter.info(f"[yellow]note:[/] {escape(msg)}", soft_wrap=True)

    def _guard(self, e: EnginefabError | OSError, what: str) -> None:
        """A bad entry is skipped (the layer is packed here); anything else — the cache cannot be
        reached, stops answering, refuses the credentials, fails — turns it off for this build."""
        if isinstance(e, (Refused, BadEntry, Mismatch)):
            self._note(f"{what}: {e}")
        else:
            self.down = str(e)
            self._note(f"the shared cache {self.remote.where} is off for this build (layers are packed here): {e}")

    def pull(self, defn: Definition, layer: Layer, key: str) -> dict | None:
        """The entry for `key`, its blob now in the store; None when the cache has none (or a
        bad one, or is down). Never raises for anything the remote does."""
        if self.down is not None:
            return None
        try:
            found = self.remote.lookup(key)
            if found is None:
                return None
            entry = self._land(defn, layer, key, *found)
        except (EnginefabError, OSError) as e:
            self._guard(e, f"refused the shared cache's entry for layer {layer.id} of {defn.image.alias}")
            return None
        self.store.action_put(key, entry)
        self.pulled += 1
        self.bytes_pulled += entry["size"]
        return entry

    def _land(self, defn: Definition, layer: Layer, key: str, entry: dict, desc: dict) -> dict:
        want = compress.MEDIA_TYPES[defn.compression.algorithm]
        claims = {k: entry.get(k) for k in FIELDS}
        problems = [f"{k} {claims[k]!r}" for k in ("digest", "diff_id") if not _DIGEST.match(str(claims[k]))]
        if entry.get("key") != key or claims["layer"] != layer.id:
            problems.append(f"it is the entry of {entry.get('key')!r}/{claims['layer']!r}")
        if claims["media_type"] != want:
            problems.append(f"media type {claims['media_type']!r}, the contract says {want}")
        if not isinstance(claims["size"], int) or claims["size"] <= 0:
            problems.append(f"size {claims['size']!r}")
        if claims["tar_size"] is not None and (not isinstance(claims["tar_size"], int) or claims["tar_size"] < 0):
            problems.append(f"tar_size {claims['tar_size']!r}")
        if (desc.get("digest"), desc.get("size")) != (claims["digest"], claims["size"]):
            problems.append("its manifest's layer is not its entry's")
        if problems:
            raise Refused("; ".join(problems))
        unpacked = _Unpacked(want)
        h = hashlib.sha256()
        n = 0
        with self.store.writer() as (out, commit):
            for chunk in self.remote.blob(claims["digest"], claims["size"]):
                n += len(chunk)
                if n > claims["size"]:
                    raise Refused(f"blob {claims['digest']} is longer than its {claims['size']} bytes")
                h.update(chunk)
                unpacked.feed(chunk)
                out.write(chunk)
            got = "sha256:" + h.hexdigest()
            if got != claims["digest"] or n != claims["size"]:
                raise Refused(f"blob {claims['digest']} arrived as {got} ({n} bytes)")
            if unpacked.digest() != claims["diff_id"]:
                raise Refused(f"blob {claims['digest']} unpacks to {unpacked.digest()}, the entry says "
                              f"diff_id {claims['diff_id']}")
            commit(got)
        return {k: v for k, v in claims.items() if v is not None}

    def publish(self, key: str, entry: dict, *, unless_present: bool = False) -> None:
        """Write our entry (after packing; or, `unless_present`, a local hit the cache lacks)."""
        if self.down is not None or self.read_only is not None:
            return
        try:
            if unless_present and self.remote.has(key):
                return
            body = {"key": key, **{k: entry[k] for k in FIELDS if k in entry}}
            self.bytes_sent += self.remote.publish(key, body, self.store.blob_path(entry["digest"]))
            self.published += 1
        except (TransportFailed, OSError) as e:
            self._guard(e, "")
        except EnginefabError as e:  # refused (credentials, permissions, quota): go on reading
            self.read_only = str(e)
            self._note(f"nothing more is written to the shared cache {self.remote.where} in this build: {e}")

    def summary(self) -> dict:
        return {"cache": self.remote.where, "pulled": self.pulled, "published": self.published,
                "bytes_pulled": self.bytes_pulled, "bytes_sent": self.bytes_sent, "down": self.down,
                "read_only": self.read_only}
