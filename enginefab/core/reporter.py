"""What a run tells its user: messages and byte progress, through one injected `Reporter`.

The command line makes the rich one (`core.ui.RichReporter`: stderr, silent under --json or
ENGINEFAB_QUIET=1, bars only on a terminal) and passes it down; a test passes a `Recording`
and reads what was said. Messages carry rich markup (``[yellow]note:[/] …``); `plain` drops it.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass, field
from typing import ContextManager, Iterator, Protocol

_MARKUP = re.compile(r"\[(?:/?[a-z ]+|/)\]")
_debug_log = logging.getLogger("enginefab")


def plain(msg: str) -> str:
    """A message without its markup tags (``[bold]``, ``[/]``, ``[yellow]``)."""
    return _MARKUP.sub("", msg)


class Bytes(Protocol):
    """A byte-progress task: what has moved, and how much will."""

    def advance(self, n: int) -> None: ...
    def total(self, n: int | None) -> None: ...


class Reporter(Protocol):
    #: no messages and no progress (--json, ENGINEFAB_QUIET=1)
    quiet: bool

    def info(self, msg: str, *, soft_wrap: bool = False) -> None: ...
    def warn(self, msg: str) -> None: ...
    #: said even when quiet (why a run stopped)
    def error(self, msg: str) -> None: ...
    def debug(self, msg: str) -> None: ...
    def progress(self, description: str, total: int | None) -> ContextManager[Bytes]: ...


class _NoBytes:
    def advance(self, n: int) -> None:
        pass

    def total(self, n: int | None) -> None:
        pass


@contextlib.contextmanager
def no_progress(description: str = "", total: int | None = None) -> Iterator[Bytes]:
    yield _NoBytes()


def log_debug(msg: str) -> None:
    """The debug log (core.debuglog routes it to a file when the CLI set one up)."""
    _debug_log.debug(plain(msg))


@dataclass
class Recording:
    """A reporter that keeps what it was told (plain text), for tests and for callers that
    collect messages instead of printing them."""

    quiet: bool = False
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    debugs: list[str] = field(default_factory=list)
    progressed: dict[str, int] = field(default_factory=dict)

    def info(self, msg: str, *, soft_wrap: bool = False) -> None:
        self.lines.append(plain(msg))

    def warn(self, msg: str) -> None:
        self.warnings.append(plain(msg))

    def error(self, msg: str) -> None:
        self.errors.append(plain(msg))

    def debug(self, msg: str) -> None:
        self.debugs.append(plain(msg))

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Bytes]:
        rec = self

        class _Count:
            def advance(self, n: int) -> None:
                rec.progressed[description] = rec.progressed.get(description, 0) + n

            def total(self, n: int | None) -> None:
                pass

        yield _Count()


class Silent:
    """Says nothing (a library caller that wants no output)."""

    quiet = True

    def info(self, msg: str, *, soft_wrap: bool = False) -> None:
        pass

    def warn(self, msg: str) -> None:
        pass

    def error(self, msg: str) -> None:
        pass

    def debug(self, msg: str) -> None:
        log_debug(msg)

    def progress(self, description: str, total: int | None) -> ContextManager[Bytes]:
        return no_progress()


SILENT = Silent()
