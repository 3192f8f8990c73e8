"""Headless Chromium (Debian's `chromium`, installed by ./dev) for tests of the release page: the
DOM it builds and a screenshot, read without any imaging library (a PNG is zlib and five filters)."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

PASS = (0x1F, 0x88, 0x3D)
# root has no user namespace sandbox here; no GPU; no D-Bus session
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--disable-extensions"]


def _chromium() -> str:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium is not installed: run ./dev setup (it is in APT_PACKAGES)")
    return exe


def _run(args: list[str], tmp: Path, size: tuple[int, int] = (1280, 1000)) -> subprocess.CompletedProcess:
    return subprocess.run([_chromium(), *FLAGS, f"--window-size={size[0]},{size[1]}", f"--user-data-dir={tmp}", *args],
                          capture_output=True, text=True, timeout=120, cwd=tmp)


def dump_dom(page: Path) -> str:
    tmp = page.parent / ".chromium"
    tmp.mkdir(exist_ok=True)
    p = _run(["--dump-dom", page.resolve().as_uri()], tmp)
    assert p.returncode == 0 and "<html" in p.stdout, p.stderr[-2000:]
    return p.stdout


def badges(dom: str) -> dict[tuple[str, str], str]:
    """(image, level) → status of every badge in the DOM (level "all": the image's status)."""
    found: dict[tuple[str, str], str] = {}

    class Parser(HTMLParser):
        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if "badge" in (a.get("class") or "").split():
                found.setdefault((a["data-image"], a["data-level"]), a["data-status"])

    Parser().feed(dom)
    return found


@dataclass
class Png:
    width: int
    height: int
    channels: int
    rows: list[bytes]

    def xs_of(self, y: int, rgb: tuple[int, int, int], tolerance: int = 6) -> list[int]:
        """The x of every pixel of row `y` within `tolerance` of colour `rgb`."""
        r, ch, (cr, cg, cb) = self.rows[y], self.channels, rgb
        return [i // ch for i in range(0, len(r), ch)
                if abs(r[i] - cr) <= tolerance and abs(r[i + 1] - cg) <= tolerance and abs(r[i + 2] - cb) <= tolerance]

    def count_colour(self, rgb: tuple[int, int, int], tolerance: int = 6) -> int:
        return sum(len(self.xs_of(y, rgb, tolerance)) for y in range(self.height))


def read_png(data: bytes) -> Png:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    w, h, depth, colour, _, _, interlace = ihdr
    assert depth == 8 and colour in (2, 6) and interlace == 0, ihdr
    ch = 3 if colour == 2 else 4
    raw, stride, rows, prev = zlib.decompress(idat), w * ch, [], bytes(w * ch)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - ch] if i >= ch else 0
            b, c = prev[i], prev[i - ch] if i >= ch else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return Png(w, h, ch, rows)


def screenshot(page: Path, png: Path, size: tuple[int, int] = (1280, 400)) -> Png:
    """The top of the page (the summary table) as a browser window of `size` shows it."""
    tmp = page.parent / ".chromium"
    tmp.mkdir(exist_ok=True)
    p = _run([f"--screenshot={png}", page.resolve().as_uri()], tmp, size)
    assert p.returncode == 0 and png.is_file(), p.stderr[-2000:]
    return read_png(png.read_bytes())


def green_bands(png: Png, colour: tuple[int, int, int] = PASS) -> list[tuple[int, int]]:
    """Horizontal bands of the screenshot holding the pass colour, top to bottom: per band, how
    many separate green boxes it has (badges side by side) and its first row."""
    bands: list[tuple[list[int], int]] = []
    last = -2
    for y in range(png.height):
        xs = png.xs_of(y, colour)
        if len(xs) < 20:
            continue
        boxes = 1 + sum(1 for a, b in zip(xs, xs[1:]) if b - a > 8)
        if y == last + 1 and bands:
            bands[-1][0].append(boxes)
        else:
            bands.append(([boxes], y))
        last = y
    # the most common count of a band's rows (a row through white text may split a box)
    return [(max(set(counts), key=counts.count), top) for counts, top in bands]
