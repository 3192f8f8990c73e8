"""The compression contract: the parallel gzip writer gives exactly the bytes of the contract's
serial definition, for any thread count, chunking and stream length (block edges included),
and every gzip reader (Python's, pigz) reads them; zstd is thread-count independent."""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import subprocess
import zlib

import pytest

from enginefab.assemble import compress

BLOCK = 64 * 1024  # small blocks: many block edges in little data


def serial_reference(data: bytes, level: int = 6, block: int = BLOCK) -> bytes:
    """The contract, written as plainly as possible: fixed blocks, each deflated with the previous
    32 KiB as dictionary, sync-flushed, the last finished; gzip header with mtime 0, OS 255."""
    blocks = [data[i : i + block] for i in range(0, len(data), block)] or [b""]
    out = [b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"]
    for n, b in enumerate(blocks):
        dictionary = blocks[n - 1][-32768:] if n else b""
        c = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, *([dictionary] if dictionary else []))
        out.append(c.compress(b) + c.flush(zlib.Z_FINISH if n == len(blocks) - 1 else zlib.Z_SYNC_FLUSH))
    out.append(struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF))
    return b"".join(out)


def corpus(n: int) -> bytes:
    text = b"".join(b"line %d of a layer: torch.ones(%d)\n" % (i, i % 97) for i in range(n // 30 + 1))
    noise = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(n // 64 + 1))
    return bytes(a for pair in zip(text, noise) for a in pair)[:n]


@pytest.mark.parametrize("size", [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK, 5 * BLOCK + 12345])
@pytest.mark.parametrize("threads", [1, 2, 5])
def test_parallel_gzip_is_the_serial_contract(size, threads):
    data = corpus(size)
    want = serial_reference(data)
    for chunk in (1000, 7 * 1024 + 3, BLOCK, 10**9):
        out = io.BytesIO()
        raw = hashlib.sha256()
        w = compress.ParallelGzip(out, level=6, block_size=BLOCK, threads=threads, raw=raw)
        half = len(data) // 2
        for i in range(0, half, chunk):  # first half by write(), the rest read from a file
            w.write(data[i : min(i + chunk, half)])
        w.write_from(io.BytesIO(data[half:]), len(data) - half)
        w.close()
        assert out.getvalue() == want, (size, threads, chunk)
        assert raw.hexdigest() == hashlib.sha256(data).hexdigest()
    assert gzip.decompress(want) == data
    p = subprocess.run(["pigz", "-dc"], input=want, capture_output=True, check=True)
    assert p.stdout == data


def test_crc_combine_matches_zlib():
    a, b = corpus(100_000), corpus(70_001)[::-1]
    shift = compress._crc_shift(len(b))
    assert compress.crc32_combine(zlib.crc32(a), zlib.crc32(b), shift) == zlib.crc32(a + b)


def test_zstd_output_does_not_depend_on_the_thread_count():
    data = corpus(3 << 20)
    outs = set()
    for threads in (1, 2, 4):
        out = io.BytesIO()
        w = compress.Zstd(out, level=3, threads=threads)
        w.write(data[:1000])
        w.write_from(io.BytesIO(data[1000:]), len(data) - 1000)
        w.close()
        outs.add(out.getvalue())
    assert len(outs) == 1
    import zstandard

    assert zstandard.ZstdDecompressor().decompressobj().decompress(outs.pop()) == data


def test_a_contract_this_machine_cannot_fulfil_is_refused():
    c = compress.contract("gzip")
    forged = c.model_copy(update={"fingerprint": "0" * 64, "version": "1.2.11"})
    with pytest.raises(compress.BuildError) as e:
        compress.verify(forged, image="x")
    assert "compresses differently" in e.value.message and "1.2.11" in e.value.message
