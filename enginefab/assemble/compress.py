"""Layer compression with a recorded contract: the same bytes on every machine, or a refusal.

gzip: parallel deflate in the manner of pigz. The input is cut into fixed ``block_size`` blocks;
each block is deflated on its own thread with the previous 32 KiB as preset dictionary and ends
with a sync flush (the last with finish), so the concatenation is one valid deflate stream.
Block boundaries depend only on the contract, never on the thread count or on how callers
chunk their writes. Header: no name, mtime 0, OS byte 255 (unknown), XFL from the level.

zstd: libzstd (python-zstandard) in its multi-threaded mode, whose output is the same for every
worker count >= 1 (single-threaded mode writes different bytes, so it is never used), without
the content-size field (streams do not know it).

The contract (algorithm, level, implementation, version, block size) is recorded in the lock
together with a *fingerprint*: the sha256 of compressing a fixed probe corpus. A builder whose
compressor gives another fingerprint refuses to build instead of producing other digests.
"""

from __future__ import annotations

import hashlib
import os
import queue
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO, Protocol

from enginefab.core import canonical
from enginefab.core.definition import Compression
from enginefab.core.errors import BuildError

MEDIA_TYPES = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
GZIP_BLOCK = 1 << 20
WINDOW = 32 * 1024


class Writer(Protocol):
    """A compressed stream. `raw` (a hashlib object) sees the uncompressed bytes, in order."""

    def write(self, data: bytes | bytearray | memoryview) -> int: ...
    def write_from(self, f: BinaryIO, n: int) -> None: ...
    def close(self) -> None: ...


def cpus() -> int:
    """The compression threads when the settings name none: the CPUs this process may use."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


# -- crc32 of concatenated blocks, without reading them twice -------------------------------


def _gf2_times(mat: list[int], vec: int) -> int:
    out, i = 0, 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec >>= 1
        i += 1
    return out


def _crc_shift(nbytes: int) -> list[int]:
    """The GF(2) operator that advances a crc32 over `nbytes` zero bytes (zlib's crc32_combine,
    precomputed once per block size so that combining a block's crc costs 32 steps)."""
    op = [0xEDB88320] + [1 << (n - 1) for n in range(1, 32)]  # one zero bit
    result: list[int] | None = None
    bits = nbytes * 8
    while bits:
        if bits & 1:
            result = op if result is None else [_gf2_times(op, result[n]) for n in range(32)]
        bits >>= 1
        if bits:
            op = [_gf2_times(op, op[n]) for n in range(32)]
    return result or [1 << n for n in range(32)]


def crc32_combine(crc1: int, crc2: int, shift: list[int]) -> int:
    """crc32(a + b) from crc32(a), crc32(b) and `_crc_shift(len(b))`."""
    return _gf2_times(shift, crc1) ^ crc2


# -- gzip ------------------------------------------------------------------------------------


def _deflate_block(block: memoryview | bytes, zdict: bytes, level: int, last: bool) -> tuple[bytes, int]:
    if zdict:
        c = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, zdict)
    else:
        c = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY)
    return c.compress(block) + c.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH), zlib.crc32(block)


class ParallelGzip:
    """A write-only gzip stream, deflated block-parallel, byte-identical for any thread count.

    The uncompressed stream is cut into `block_size` blocks filled in place (`write_from` reads a
    file straight into a block: no intermediate copies). Each block is deflated on a worker thread
    with the previous block's last 32 KiB as dictionary, and its crc32 computed there. A sink
    thread takes the blocks in order — hashes the raw block (`raw`), combines the crc, writes the
    compressed bytes — and hands the buffer back; so neither the caller's thread nor a deflate
    worker ever waits for another block's turn. A full block is submitted when the next byte
    arrives (or on close): the last block is the one finished with Z_FINISH, whatever the stream
    length."""

    def __init__(self, out: BinaryIO, *, level: int = 6, block_size: int = GZIP_BLOCK, threads: int | None = None,
                 raw=None):
        if block_size < WINDOW:
            raise ValueError("block_size must be at least 32 KiB")
        self._out = out
        self._level = level
        self._block = block_size
        self._raw = raw
        self._threads = threads or cpus()
        self._pool = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="deflate")
        self._shift = _crc_shift(block_size)
        self._crc = 0
        self._size = 0
        self._tail = b""
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(2 * self._threads + 2):  # bounds memory: blocks in flight
            self._free.put(bytearray(block_size))
        self._cur = self._free.get()
        self._fill = 0
        self._todo: queue.SimpleQueue = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._sink = threading.Thread(target=self._drain, name="gzip-sink", daemon=True)
        self._sink.start()
        xfl = 2 if level == 9 else 4 if level == 1 else 0
        out.write(b"\x1f\x8b\x08\x00" + b"\x00\x00\x00\x00" + bytes([xfl, 255]))

    def _drain(self) -> None:
        """The sink: every block in order; keeps going after an error so that buffers come back."""
        while True:
            item = self._todo.get()
            if item is None:
                return
            fut, block, buf = item
            try:
                data, crc = fut.result()
                if self._error is None:
                    if self._raw is not None:
                        self._raw.update(block)
                    shift = self._shift if len(block) == self._block else _crc_shift(len(block))
                    self._crc = crc32_combine(self._crc, crc, shift)
                    self._out.write(data)
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                self._error = self._error or e
            finally:
                block.release()
                self._free.put(buf)

    def _submit(self, last: bool) -> None:
        if self._error is not None:
            raise self._error
        block = memoryview(self._cur)[: self._fill]
        fut = self._pool.submit(_deflate_block, block, self._tail, self._level, last)
        self._tail = bytes(block[-WINDOW:]) if len(block) >= WINDOW else b""
        self._todo.put((fut, block, self._cur))
        self._cur = self._free.get()  # waits while every buffer is in flight
        self._fill = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        n = len(view)
        self._size += n
        while view:
            if self._fill == self._block:
                self._submit(last=False)
            k = min(len(view), self._block - self._fill)
            self._cur[self._fill : self._fill + k] = view[:k]
            self._fill += k
            view = view[k:]
        return n

    def write_from(self, f: BinaryIO, n: int) -> None:
        """Append exactly `n` bytes read from `f`."""
        left = n
        while left:
            if self._fill == self._block:
                self._submit(last=False)
            k = min(left, self._block - self._fill)
            got = f.readinto(memoryview(self._cur)[self._fill : self._fill + k])  # type: ignore[attr-defined]
            if not got:
                raise OSError(f"{getattr(f, 'name', 'input')} shrank while packing")
            self._fill += got
            left -= got
        self._size += n

    def close(self) -> None:
        self._submit(last=True)
        self._todo.put(None)
        self._sink.join()
        self._pool.shutdown()
        if self._error is not None:
            raise self._error
        self._out.write(struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF))


# -- zstd --------------------------------------------------------------------------------------


class Zstd:
    def __init__(self, out: BinaryIO, *, level: int = 3, threads: int | None = None, raw=None):
        import zstandard

        c = zstandard.ZstdCompressor(level=level, threads=max(1, threads or cpus()), write_content_size=False)
        self._w = c.stream_writer(out, closefd=False)
        self._raw = raw
        self._buf = bytearray(1 << 20)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._raw is not None:
            self._raw.update(data)
        return self._w.write(data)

    def write_from(self, f: BinaryIO, n: int) -> None:
        left = n
        view = memoryview(self._buf)
        while left:
            got = f.readinto(view[: min(left, len(view))])  # type: ignore[attr-defined]
            if not got:
                raise OSError(f"{getattr(f, 'name', 'input')} shrank while packing")
            self.write(view[:got])
            left -= got

    def close(self) -> None:
        self._w.close()


def open_writer(contract: Compression, out: BinaryIO, threads: int | None = None, raw=None) -> Writer:
    """The contract's compressor writing to `out`; `raw`, a hashlib object, sees the input."""
    if contract.algorithm == "gzip":
        return ParallelGzip(out, level=contract.level, block_size=contract.block_size, threads=threads, raw=raw)
    return Zstd(out, level=contract.level, threads=threads, raw=raw)


# -- the contract ------------------------------------------------------------------------


def probe_corpus() -> bytes:
    """3 MiB of fixed bytes: incompressible runs, text, repeats; crosses gzip block boundaries."""
    parts = []
    seed = b"enginefab-compression-probe-v1"
    for i in range(96):  # 96 × 32 KiB pseudo-random
        block = b"".join(hashlib.sha256(seed + struct.pack("<II", i, j)).digest() for j in range(1024))
        parts.append(block)
        parts.append((b"import torch\nx = torch.ones(%d)\n" % i) * 512)
    data = b"".join(parts)
    return data[: 3 << 20]


class _Sink:
    def __init__(self) -> None:
        self.h = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.h.update(data)
        return len(data)


def fingerprint(algorithm: str, level: int, block_size: int, threads: int | None = None) -> str:
    sink = _Sink()
    tmp = Compression.model_construct(algorithm=algorithm, level=level, block_size=block_size)  # a probe: no contract yet
    w = open_writer(tmp, sink, threads=threads)  # type: ignore[arg-type]
    data = probe_corpus()
    for i in range(0, len(data), 100_003):  # odd chunking on purpose
        w.write(data[i : i + 100_003])
    w.close()
    return sink.h.hexdigest()


def implementation(algorithm: str) -> tuple[str, str]:
    if algorithm == "gzip":
        return "zlib", zlib.ZLIB_RUNTIME_VERSION
    import zstandard

    return "libzstd", ".".join(map(str, zstandard.ZSTD_VERSION))


def contract(algorithm: str = "gzip", level: int | None = None, block_size: int = GZIP_BLOCK) -> Compression:
    """The contract this machine's compressor fulfils, recorded by `enginefab lock`."""
    if algorithm not in MEDIA_TYPES:
        raise BuildError(f"unknown compression {algorithm!r}", fix="use gzip or zstd")
    level = level if level is not None else (6 if algorithm == "gzip" else 3)
    impl, version = implementation(algorithm)
    return Compression(
        algorithm=algorithm,  # type: ignore[arg-type]
        level=level,
        implementation=impl,
        version=version,
        block_size=block_size if algorithm == "gzip" else 0,
        fingerprint=fingerprint(algorithm, level, block_size),
    )


_verified: set[str] = set()


def _identity(algorithm: str) -> list:
    """What the compressor's bytes depend on here: the Python, this module, the compression
    module and the shared libraries it loaded (path, size, mtime): a change to any re-verifies."""
    import sys

    parts: list = [sys.version, os.path.realpath(sys.executable), os.uname().machine]
    files = [__file__]
    if algorithm == "gzip":
        files.append(getattr(zlib, "__file__", "") or "")
        libs = ("libz.so",)
    else:
        import zstandard

        files.append(zstandard.__file__ or "")
        files.extend(getattr(m, "__file__", "") or "" for m in list(sys.modules.values())
                     if getattr(m, "__name__", "").startswith("zstandard.backend"))
        libs = ("libzstd.so",)
    try:
        with open("/proc/self/maps") as maps:
            files += sorted({ln.split()[-1] for ln in maps if any(lib in ln for lib in libs)})
    except OSError:
        pass
    for f in files:
        if f and os.path.exists(f):
            st = os.stat(f)
            parts.append([f, st.st_size, st.st_mtime_ns])
    return parts


def verify(c: Compression, image: str | None = None, store=None) -> None:
    """Refuse to build when this machine would not reproduce the contract's bytes.

    The probe takes ~0.15 s; a store remembers a pass for this exact compressor (Python, module
    and library files) so that a no-op rebuild does not pay it again."""
    key = c.model_dump_json()
    if key in _verified:
        return
    marker = None
    if store is not None:
        marker = store.root / "verified" / canonical.key_of({"contract": key, "impl": _identity(c.algorithm)})
        if marker.exists():
            _verified.add(key)
            return
    impl, version = implementation(c.algorithm)
    got = fingerprint(c.algorithm, c.level, c.block_size)
    if got != c.fingerprint:
        raise BuildError(
            f"this machine's {impl} {version} compresses differently from the lock's contract "
            f"({c.implementation} {c.version}, {c.algorithm} level {c.level}): probe fingerprint "
            f"{got[:16]}… ≠ {c.fingerprint[:16]}…, so every layer digest would differ",
            image=image,
            fix=f"build with {c.implementation} {c.version} (for example through the project's flake), "
            "or record a new contract with `enginefab lock` and review the digest changes",
        )
    _verified.add(key)
    if marker is not None:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
