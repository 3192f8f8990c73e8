"""What a failed run step's error shows of its log: what the compiler said, then how it ended.

A build's last lines are usually the build tool's summary ("error: command 'gcc' failed",
pip's "× Building wheel … did not run successfully"), the compiler's own message sits above
them. So the excerpt is the first lines that name an error (with the line before each, which
is usually the file and function), then the log's tail; the whole log is kept in a file the
error names.
"""

from __future__ import annotations

import re

#: a compiler's, linker's or build tool's error line (gcc/clang "file:line:col: error:",
#: "fatal error:", ld's "undefined reference", make's "***", CMake's "CMake Error")
ERROR = re.compile(r"(\b(fatal )?error\b|\bError\b|undefined reference|\*\*\*|Traceback \(most recent)")
FIRST = 12  # error lines shown at most
TAIL = 25
WIDTH = 300  # a line is cut here (compiler command lines run to kilobytes)


def excerpt(lines: list[str]) -> list[str]:
    """The lines of `lines` worth showing (pure): first error lines with their context, a
    marker, the tail."""
    cut = [ln if len(ln) <= WIDTH else ln[:WIDTH] + " …" for ln in lines]
    tail_from = max(0, len(cut) - TAIL)
    picked: list[int] = []
    for n, ln in enumerate(cut[:tail_from]):
        if ERROR.search(ln):
            picked += [m for m in (n - 1, n) if m >= 0 and m not in picked]
            if sum(1 for m in picked if ERROR.search(cut[m])) >= FIRST:
                break
    out: list[str] = []
    last = -1
    for m in picked:
        if m > last + 1:
            out.append(f"[… line {m + 1}]")
        out.append(cut[m])
        last = m
    if picked:
        out.append(f"[… the last {len(cut) - tail_from} lines]")
    elif tail_from:
        out.append(f"[… {tail_from} lines, then the last {len(cut) - tail_from}]")
    return out + cut[tail_from:]
