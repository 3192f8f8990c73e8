"""What the shared options name, turned into the objects the stages take: the settings (built
here, once per command, from its options and the environment: the only place below `enginefab`
that reads it), the reporter and the session made from them, the matrix, the chosen images, the
store, the shared action cache, a registry client.

Every stage is imported inside the function that needs it, so that `enginefab --help` imports
none of them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

_quiet = False  # --json: results on stdout, nothing else
_made: dict = {}  # this command's settings and reporter, made once


def begin() -> None:
    """A command starts: nothing of a previous one (in the same process) is kept."""
    global _quiet
    _quiet = False
    _made.clear()


def json_output(on: bool) -> None:
    """--json was given: the reporter says nothing (errors still print)."""
    global _quiet
    _quiet = on


def settings(**overrides):
    """This command's settings: each option given (not None) over its ENGINEFAB_* variable
    (docs/usage.md lists them). A command that has options for them calls this first with
    them; every later call without options gets the same settings."""
    if overrides or "settings" not in _made:
        from enginefab.core.settings import Settings

        _made["settings"] = Settings.from_env(os.environ, quiet=True if _quiet else None, **overrides)
        _made.pop("session", None)
    return _made["settings"]


def console():
    """The command line's one stderr console: messages, verdicts, errors (rich imported only now)."""
    if "console" not in _made:
        from rich.console import Console

        _made["console"] = Console(stderr=True, highlight=False)
    return _made["console"]


def reporter():
    """The rich reporter on the command line's console, quiet under --json or ENGINEFAB_QUIET=1."""
    if "reporter" not in _made:
        from enginefab.core.ui import RichReporter

        _made["reporter"] = RichReporter(quiet=_quiet or settings().quiet, console=console())
    return _made["reporter"]


def session():
    """What this command's fetches share (download cache, mirrors, credentials), reporting to `reporter()`."""
    if "session" not in _made:
        from enginefab.transport.session import Session

        _made["session"] = Session.of(settings(), reporter())
    return _made["session"]


def matrix():
    """The matrix, its broken images and files kept aside: a command fails only for those it touches."""
    from enginefab.engines.matrix import load

    return load(settings().root, strict=False)


def pick(m, names, all_, demo):
    from enginefab.core.errors import MatrixError

    imgs = m.select(names or [], all_=all_, demo=demo)
    if not imgs:
        raise MatrixError("no images chosen", fix="name images, or pass --all or --demo")
    return imgs


def shared(cache: Optional[str], store, plain_http: bool, ca_cert: Optional[Path]):
    """The registry action cache `--cache` names, wired to the builder's SharedCache."""
    if not cache:
        return None
    from enginefab.assemble.remote import SharedCache
    from enginefab.transport.actioncache import RegistryActionCache

    kw = {"ca_cert": str(ca_cert) if ca_cert else None, "env": settings().environ, "options": settings().http}
    if plain_http:
        kw["plain_http"] = True
    return SharedCache(RegistryActionCache.at(cache, **kw), store, reporter=reporter())


def require_target(to: str) -> None:
    if not to:
        from enginefab.core.errors import RegistryError

        raise RegistryError("no target registry", fix="pass --to HOST[:PORT]/PREFIX, or a target of registry/targets.toml")


def store(path: Optional[Path] = None):
    """The store `--store` names, else the settings' (ENGINEFAB_STORE, else the cache's)."""
    from enginefab.assemble.store import Store

    return Store(path or settings().store)


def build_options(**kw):
    """How the builder works (archive limits, threads, run timeout) from the settings."""
    from enginefab.assemble.pipeline import BuildOptions

    return BuildOptions.of(settings(), **kw)


def client_for(ref: str, plain_http: bool, ca_cert: Optional[Path]):
    """The reference `ref` parsed, and a registry client for its registry."""
    from enginefab.transport.client import RegistryClient
    from enginefab.transport.reference import parse_reference

    r = parse_reference(ref)
    return r, RegistryClient(r.registry, plain_http=plain_http, ca_cert=str(ca_cert) if ca_cert else None,
                             options=settings().http, env=settings().environ)


def registry_state() -> Path:
    """Where `registry start` keeps its registries' state."""
    return settings().cache / "registry"

