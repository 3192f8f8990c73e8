"""Mirrors: one config that rewrites PyPI, apt repositories, registries and URL prefixes.

Every resolver and fetcher asks this module for the URL to use, so an air-gapped user (or a
test) points everything at a local copy with one file::

    # registry/mirrors.toml, or the file named by $ENGINEFAB_MIRRORS (core.settings)
    [pypi]
    index = "http://127.0.0.1:8080/simple"
    [[rewrite]]                       # URL prefixes, first match wins
    from = "https://files.pythonhosted.org/"
    to = "file:///srv/mirror/pythonhosted/"
    [registries]                      # registry host → mirror host[/prefix]
    "docker.io" = "127.0.0.1:5000/dockerhub"

The lock always records the *upstream* URL; mirrors only change where bytes come from, and the
sha256 in the lock still decides whether they are the right bytes. A mirrored index that lists
its own file URLs (``to`` of a rewrite) is mapped back through the same rewrite (``upstream``),
so a lock made through a mirror is byte-identical to one made without it.

Registry keys are hosts as users write them; ``docker.io`` also matches Docker Hub's API host
``registry-1.docker.io`` (and the other way round).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from enginefab.core.errors import LockError

DEFAULT_INDEX = "https://pypi.org/simple"


@dataclass(frozen=True)
class Mirrors:
    index: str = DEFAULT_INDEX
    rewrites: tuple[tuple[str, str], ...] = ()
    registries: dict[str, str] = field(default_factory=dict)

    def url(self, url: str) -> str:
        """Where to fetch `url` from (first matching rewrite)."""
        for src, dst in self.rewrites:
            if url.startswith(src):
                return dst + url[len(src) :]
        return url

    def upstream(self, url: str) -> str:
        """The upstream form of a URL a mirror handed out (inverse of `url`)."""
        for src, dst in self.rewrites:
            if url.startswith(dst):
                return src + url[len(dst) :]
        return url

    def registry(self, host: str) -> str:
        """The host[/prefix] to talk to for registry `host`."""
        for key in (host, *_HUB_ALIASES.get(host, ())):
            if key in self.registries:
                return self.registries[key]
        return host


_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")
_HUB_ALIASES = {h: tuple(x for x in _HUB if x != h) for h in _HUB}


def parse(text: str, origin: str = "mirrors") -> Mirrors:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise LockError(f"{origin}: not valid TOML: {e}") from e
    unknown = set(data) - {"pypi", "rewrite", "registries"}
    if unknown:
        raise LockError(f"{origin}: unknown section(s) {', '.join(sorted(unknown))}", fix="use pypi, rewrite, registries")
    rewrites = []
    for i, r in enumerate(data.get("rewrite", [])):
        if set(r) != {"from", "to"}:
            raise LockError(f"{origin}: rewrite #{i + 1} needs exactly the keys from and to")
        rewrites.append((r["from"], r["to"]))
    return Mirrors(
        index=data.get("pypi", {}).get("index", DEFAULT_INDEX).rstrip("/"),
        rewrites=tuple(rewrites),
        registries=dict(data.get("registries", {})),
    )


def load(path: Path | None, root: Path) -> Mirrors:
    """The mirrors in force: the file `path` names (the settings' ENGINEFAB_MIRRORS), which must
    exist, else registry/mirrors.toml of the checkout `root`, else none. Read once per session."""
    if path is not None:
        if not path.is_file():
            raise LockError(f"ENGINEFAB_MIRRORS names {path}, which does not exist", fix="unset it or create the file")
        return parse(path.read_text(encoding="utf-8"), origin=str(path.resolve()))
    p = root / "registry" / "mirrors.toml"
    if not p.is_file():
        return Mirrors()
    return parse(p.read_text(encoding="utf-8"), origin=str(p.resolve()))
