"""What a failed run step's error shows of its log: what the compiler said, then how it ended.

A build's last lines are usually the build tool's summary ("error: command 'gcc' failed",
pip's "Failed building wheel"); the compiler's own message can sit thousands of lines above
them. So the excerpt is the compiler's diagnostics (``file:line:col: error:``, ``fatal error:``,
the linker's ``undefined reference``, ``CMake Error``) with the line before each (the function)
and the source lines after it (gcc's caret) — or, when there is none, the first lines naming
an error — then the log's tail. The whole log is kept in a file the error names.
"""

from __future__ import annotations

import re

#: a compiler's, assembler's, linker's or CMake's own diagnostic
DIAGNOSTIC = re.compile(r"(:\d+(:\d+)?: (fatal )?error:|undefined reference to|^\s*CMake Error|"
                        r"collect2: error|ld: cannot find|: No such file or directory$)")
#: any line that says error, when no compiler spoke
ERROR = re.compile(r"(\berror\b|\bError\b|Traceback \(most recent)")
FIRST = 8  # diagnostics (or error lines) shown at most
AFTER = 3  # lines after a diagnostic (gcc shows the source line and a caret)
TAIL = 40  # as many as before the excerpt: what a step printed last is never hidden
WIDTH = 300  # a line is cut here (compiler command lines run to kilobytes)


def _picks(cut: list[str], end: int) -> list[int]:
    """Indexes of the lines worth showing before `end`: diagnostics in context, else error lines."""
    diag = [n for n, ln in enumerate(cut[:end]) if DIAGNOSTIC.search(ln)][:FIRST]
    if diag:
        around = {m for n in diag for m in range(n - 1, n + AFTER + 1)}
    else:
        around = {m for n in [n for n, ln in enumerate(cut[:end]) if ERROR.search(ln)][:FIRST] for m in (n - 1, n)}
    return sorted(m for m in around if 0 <= m < end)


def excerpt(lines: list[str]) -> list[str]:
    """The lines of `lines` worth showing (pure): the diagnostics with their context, a marker
    where lines are left out, the tail."""
    cut = [ln if len(ln) <= WIDTH else ln[:WIDTH] + " …" for ln in lines]
    tail_from = max(0, len(cut) - TAIL)
    out: list[str] = []
    last = -1
    for m in _picks(cut, tail_from):
        if m > last + 1:
            out.append(f"[… line {m + 1}]")
        out.append(cut[m])
        last = m
    if tail_from > last + 1:
        out.append(f"[… the last {len(cut) - tail_from} of {len(cut)} lines]")
    return out + cut[tail_from:]
