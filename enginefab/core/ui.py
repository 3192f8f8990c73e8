"""The rich reporter: messages and progress bars on stderr; silent when asked (--json,
ENGINEFAB_QUIET=1), bars only on a terminal. The command line makes one and passes it down
(`core.reporter.Reporter`)."""

from __future__ import annotations

import contextlib
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

from enginefab.core.reporter import Bytes, log_debug, no_progress


class _Task:
    """A byte-progress task of one rich Progress."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._p, self._t = progress, task

    def advance(self, n: int) -> None:
        self._p.advance(self._t, n)

    def total(self, n: int | None) -> None:
        self._p.update(self._t, total=n)


class RichReporter:
    def __init__(self, *, quiet: bool = False, console: Console | None = None) -> None:
        self.quiet = quiet
        self.console = console or Console(stderr=True, highlight=False)

    @property
    def interactive(self) -> bool:
        """Progress bars are shown: not quiet, and stderr is a terminal."""
        return not self.quiet and sys.stderr.isatty()

    def info(self, msg: str, *, soft_wrap: bool = False) -> None:
        if not self.quiet:
            self.console.print(msg, soft_wrap=soft_wrap)

    def warn(self, msg: str) -> None:
        self.info(f"[yellow]note:[/] {msg}")

    def error(self, msg: str) -> None:
        self.console.print(msg, soft_wrap=True)

    def debug(self, msg: str) -> None:
        log_debug(msg)

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Bytes]:
        if not self.interactive:
            with no_progress() as bar:
                yield bar
            return
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        ) as p:
            yield _Task(p, p.add_task(description, total=total))

