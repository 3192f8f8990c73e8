"""Progress bars and messages on stderr; silent when asked (--json) or when not a terminal."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

err = Console(stderr=True, highlight=False)
_quiet = False


def set_quiet(q: bool) -> None:
    global _quiet
    _quiet = q


def quiet() -> bool:
    return _quiet or os.environ.get("ENGINEFAB_QUIET") == "1"


def info(msg: str) -> None:
    if not quiet():
        err.print(msg)


class Bytes:
    """A byte-progress task; a no-op when progress is not shown."""

    def __init__(self, progress: Progress | None, task: TaskID | None) -> None:
        self._p, self._t = progress, task

    def advance(self, n: int) -> None:
        if self._p is not None and self._t is not None:
            self._p.advance(self._t, n)

    def total(self, n: int | None) -> None:
        if self._p is not None and self._t is not None:
            self._p.update(self._t, total=n)


@contextlib.contextmanager
def bytes_progress(description: str, total: int | None) -> Iterator[Bytes]:
    if quiet() or not sys.stderr.isatty():
        yield Bytes(None, None)
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as p:
        yield Bytes(p, p.add_task(description, total=total))
