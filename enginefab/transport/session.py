"""What the fetches of one run share: the download cache, the mirrors, the HTTP stack's patience,
the reporter and the environment credentials come from; and what a run learns as it goes (one
connection pool per set of HTTP options, which hosts answer, the index pages read).

Made once at the command line's edge from the settings (`Session.of(settings, reporter)`) and
passed down to every resolver and fetcher, so nothing below reads the environment or keeps
process-wide state: two sessions (two stores, two mirrors files, a test's and the user's) never
see each other's caches.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Hashable, Mapping, TypeVar

from enginefab.core.httpoptions import DEFAULT, HttpOptions
from enginefab.core.reporter import SILENT, Reporter
from enginefab.core.settings import Settings
from enginefab.transport.http import Http
from enginefab.transport.mirrors import Mirrors
from enginefab.transport.mirrors import load as load_mirrors
from enginefab.transport.reach import host_of, unreachable

T = TypeVar("T")


@dataclass(eq=False)
class Session:
    #: the content-addressed download cache (`<cache>/downloads`)
    downloads: Path
    mirrors: Mirrors = field(default_factory=Mirrors)
    http_options: HttpOptions = DEFAULT
    reporter: Reporter = SILENT
    #: where credentials are read (ENGINEFAB_REGISTRY_*, DOCKER_CONFIG, a target's user_env)
    environ: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    _pools: dict[HttpOptions, Http] = field(default_factory=dict, init=False, repr=False)
    _hosts: dict[str, str | None] = field(default_factory=dict, init=False, repr=False)
    _memo: dict[Hashable, object] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def of(cls, settings: Settings, reporter: Reporter = SILENT) -> Session:
        return cls(downloads=settings.downloads, mirrors=load_mirrors(settings.mirrors, settings.root),
                   http_options=settings.http, reporter=reporter, environ=settings.environ)

    def http(self, options: HttpOptions | None = None) -> Http:
        """The connection pool for `options` (the session's own by default), made once."""
        options = options or self.http_options
        with self._lock:
            if options not in self._pools:
                self._pools[options] = Http(options)
            return self._pools[options]

    def remember(self, key: Hashable, make: Callable[[], T]) -> T:
        """`make()`, once per session and key: an index page, a parsed apt index (what a run reads
        more than once and may keep; a failure is not kept)."""
        with self._lock:
            if key in self._memo:
                return self._memo[key]  # type: ignore[return-value]
        value = make()
        with self._lock:
            return self._memo.setdefault(key, value)  # type: ignore[return-value]

    def unreachable_host(self, url: str, *, timeout: float = 10) -> str | None:
        """Why the host of `url` (after mirrors) cannot be reached (DNS, connect), asked once per
        session, so that a matrix whose inputs sit on unreachable hosts fails fast instead of
        retrying each."""
        parsed = host_of(url, self.mirrors)
        if parsed is None or not parsed.hostname:
            return None
        host = parsed.hostname
        with self._lock:
            if host in self._hosts:
                return self._hosts[host]
        why = unreachable(url, self.mirrors, timeout=timeout)
        with self._lock:
            self._hosts[host] = why
        return why

