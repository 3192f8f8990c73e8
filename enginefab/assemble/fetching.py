"""Where a layer's inputs come from: the download cache, the vendor, a registry, a git forge, a
file a user added — verified against the pin; `InputUnreachable` when it cannot be had here."""

from __future__ import annotations

import socket
import urllib.parse
from pathlib import Path
from typing import Callable

from enginefab.core import ui
from enginefab.core.definition import Input
from enginefab.core.errors import BuildError
from enginefab.transport import download, git
from enginefab.transport.blobs import fetch_base_blob
from enginefab.transport.mirrors import current as current_mirrors


class InputUnreachable(BuildError):
    """An input cannot be fetched here (host unreachable, manual file not added, base not resolved)."""


Fetcher = Callable[[Input, str], Path]

_hosts: dict[str, str | None] = {}  # host → None (reachable) or why not, for this process


def _unreachable_host(url: str) -> str | None:
    """Why the host of `url` cannot be reached (DNS, connect), checked once per process, so
    that a matrix whose inputs sit on unreachable hosts fails fast instead of retrying each."""
    parsed = urllib.parse.urlparse(current_mirrors().url(url))
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return None
    host = parsed.hostname
    if host not in _hosts:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            socket.create_connection((host, port), timeout=10).close()
            _hosts[host] = None
        except OSError as e:
            _hosts[host] = f"{host} is unreachable from here ({e.strerror or e})"
    return _hosts[host]


def default_fetcher(inp: Input, image: str) -> Path:
    """The verified local file of an input (download cache, user-added manual files)."""
    if inp.kind == "manual":
        p = download.cached(inp.sha256) if inp.sha256 else None
        if p is None:
            raise InputUnreachable(
                f"{inp.name} ({inp.version}) must be downloaded by hand: {inp.where or 'see its vendor'}",
                image=image,
                input=inp.ref,
                fix="download it, then run `enginefab lock --add-file PATH`"
                + (f" (expects sha256 {inp.sha256})" if inp.sha256 else ""),
            )
        return p
    if inp.kind == "oci":
        return fetch_base_blob(inp, image=image)
    if inp.kind == "git":
        return _git_archive(inp, image)
    if inp.kind == "deb" and not inp.url:  # recorded by a lock that could not reach its repository
        raise InputUnreachable(
            f"{inp.name} {inp.version} is not pinned yet: its repository was not reachable when {image} was locked "
            f"(from {inp.where})",
            image=image,
            input=inp.ref,
            fix=f"on a machine that reaches the repository, run `enginefab lock {image}` and commit "
            f"build/{image}.json (it pins every package by the signed index); then build again here",
        )
    if not inp.url:
        raise BuildError(f"{inp.ref} has no URL", image=image, input=inp.ref)
    if inp.sha256 and download.cached(inp.sha256) is None:
        why = _unreachable_host(inp.url)
        if why:
            raise InputUnreachable(f"cannot download {inp.url}: {why}", image=image, input=inp.ref,
                                   fix="build where the host is reachable, or point registry/mirrors.toml at a mirror")
    return download.fetch(download.Want(url=inp.url, sha256=inp.sha256, size=inp.size or None, label=inp.ref, image=image))


def _git_archive(inp: Input, image: str) -> Path:
    """The archive enginefab makes of a git input's tree (transport/git.py), from the download
    cache when it holds the pinned sha256."""
    if inp.sha256 and download.cached(inp.sha256):
        return download.cached(inp.sha256)  # type: ignore[return-value]
    why = _unreachable_host(inp.url or "")
    if why:
        raise InputUnreachable(f"cannot fetch {inp.url}: {why}", image=image, input=inp.ref,
                               fix="build where the host is reachable, or point registry/mirrors.toml at a mirror of the repository")
    pin = git.GitPin(url=inp.url or "", commit=inp.commit or "", tree=inp.tree or "", prefix=inp.prefix or "",
                     label=inp.ref, image=image)
    made = git.archive(pin, inp.sha256)
    if not inp.sha256:  # pinned by its tree alone: say what to pin (lock --check warns until then)
        ui.info(f"{image}: {inp.ref}: the archive of tree {inp.tree} has sha256 {made.sha256} ({made.size} bytes); "
                f'pin it in engines/ ([[image.git]] {inp.name}): sha256 = "{made.sha256}", size = {made.size}')
    return made.path
