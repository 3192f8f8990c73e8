"""Where a problem is in the TOML a user wrote: `file:line`, and "did you mean" for a misspelt key.

tomllib gives values, not positions, so positions are found again in the text: the table a key
path lives in (``[[image]]`` number n, ``[os."debian-12"]``, …), then the line that sets the key
inside it. That is exact for what people write in engines/ (one key per line, tables by header
or inline) and falls back to the table's header line otherwise — never to a wrong line.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

#: `cutoff` of difflib.get_close_matches: below it a name is not offered as "similar"
SIMILAR = 0.75

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_SYNTAX_POS = re.compile(r"\(at line (\d+), column (\d+)\)")


def similar(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Candidates that look like `word` (difflib), best first; none when nothing is close."""
    return difflib.get_close_matches(word, sorted(set(candidates)), n=n, cutoff=SIMILAR)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = similar(word, candidates)
    return f"did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def syntax_position(message: str) -> tuple[int, int] | None:
    """(line, column), 1-based, of a tomllib syntax error (its message carries them)."""
    m = _SYNTAX_POS.search(message)
    return (int(m[1]), int(m[2])) if m else None


def _header_path(raw: str) -> list[str]:
    """`os."debian-12".base` → ["os", "debian-12", "base"]."""
    return [p.strip().strip('"').strip("'") for p in re.findall(r'"[^"]*"|\'[^\']*\'|[^.]+', raw)]


@dataclass(frozen=True)
class _Table:
    line: int  # 1-based line of the header (0: the root table)
    path: tuple[str, ...]
    index: int | None  # n-th table of an array of tables ([[image]]), 0-based


class TomlText:
    """The tables of one TOML text and the lines that set keys in them."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.tables: list[_Table] = [_Table(0, (), None)]
        counts: dict[tuple[str, ...], int] = {}
        quote: str | None = None  # inside a multi-line string (a smoke script): no headers there
        for n, line in enumerate(self.lines, 1):
            was_inside = quote is not None
            for q in ("'''", '"""'):
                if (quote in (None, q)) and line.count(q) % 2:
                    quote = None if quote == q else q
            m = _HEADER.match(line)
            if was_inside or not m or "=" in line.split("]")[0]:
                continue
            path = tuple(_header_path(m[2]))
            index = None
            if m[1] == "[[":
                index = counts.get(path, 0)
                counts[path] = index + 1
            self.tables.append(_Table(n, path, index))

    def _block(self, loc: Sequence[str | int]) -> tuple[int, int, list[str | int]]:
        """The lines [start, end) of the deepest table `loc` reaches, and the rest of `loc`."""
        best: tuple[int, int] | None = None
        rest: list[str | int] = list(loc)
        for i, t in enumerate(self.tables):
            used = _match(t, loc)
            if used is None or (best is not None and used < best[1]):
                continue
            best = (i, used)
        if best is None:
            return 1, len(self.lines) + 1, rest
        i, used = best
        start = self.tables[i].line
        # the block ends at the next header that is not a sub-table of this one
        end = len(self.lines) + 1
        for t in self.tables[i + 1:]:
            if (not self.tables[i].path or t.path[: len(self.tables[i].path)] != self.tables[i].path
                    or t.path == self.tables[i].path):
                end = t.line
                break
        return max(start, 1), end, list(loc[used:])

    def line_of(self, loc: Sequence[str | int]) -> int:
        """The 1-based line that sets `loc` (a pydantic error location), or the nearest line
        known to hold it: the key's own, the n-th inline table of an array, the table's header."""
        start, end, rest = self._block(loc)
        pos, i = start, 0
        while i < len(rest):
            part = rest[i]
            i += 1
            if isinstance(part, int):  # the n-th inline table of an array: one per line as written
                hits = [n for n in range(pos, end) if "{" in self._code(n)]
                if part >= len(hits):
                    return pos
                pos = hits[part]
                continue
            pat = re.compile(rf"""(^|[{{,\s])(?:{re.escape(part)}|"{re.escape(part)}"|'{re.escape(part)}')\s*=""")
            found = next((n for n in range(pos, end) if pat.search(self._code(n))), None)
            if found is None:  # a sub-table ([[image.files]]): its n-th header
                headers = [t.line for t in self.tables if pos <= t.line < end and t.path and t.path[-1] == part]
                n = rest[i] if i < len(rest) and isinstance(rest[i], int) else 0
                if n >= len(headers):
                    return pos
                found, i = headers[n], i + (1 if i < len(rest) and isinstance(rest[i], int) else 0)
            pos = found
        return pos

    def _code(self, n: int) -> str:
        line = self.lines[n - 1] if 0 < n <= len(self.lines) else ""
        return line.split("#", 1)[0] if "#" in line and "'" not in line and '"' not in line else line


def _match(t: _Table, loc: Sequence[str | int]) -> int | None:
    """How many items of `loc` the table `t` stands for, or None when it is not on its path."""
    i = 0
    for part in t.path:
        if i >= len(loc) or loc[i] != part:
            return None
        i += 1
        if i < len(loc) and isinstance(loc[i], int):
            if t.index is not None and part == t.path[-1] and loc[i] == t.index:
                i += 1
            elif t.index is not None and part == t.path[-1]:
                return None
    if t.index is not None and (i == 0 or not isinstance(loc[i - 1], int)):
        return None
    return i
