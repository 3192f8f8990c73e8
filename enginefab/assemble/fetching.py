"""Where a layer's inputs come from: the download cache, the vendor, a registry, a git forge, a
file a user added — verified against the pin; `InputUnreachable` when it cannot be had here.
Everything goes through a session (its download cache, mirrors, which hosts answer, reporter)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from enginefab.core.definition import Input
from enginefab.core.errors import BuildError
from enginefab.transport import download, git
from enginefab.transport.blobs import fetch_base_blob
from enginefab.transport.session import Session


class InputUnreachable(BuildError):
    """An input cannot be fetched here (host unreachable, manual file not added, base not resolved)."""


Fetcher = Callable[[Input, str], Path]


class SessionFetcher:
    """The verified local file of an input, through a session: its download cache (user-added
    manual files too), its mirrors, its knowledge of which hosts answer."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def __call__(self, inp: Input, image: str) -> Path:
        return fetch_input(inp, image, self.session)


def _cached(inp: Input, session: Session) -> Path | None:
    if not inp.sha256:
        return None
    return download.cached(inp.sha256, session.downloads, reporter=session.reporter)


def fetch_input(inp: Input, image: str, session: Session) -> Path:
    """The verified local file of an input (download cache, user-added manual files)."""
    if inp.kind == "manual":
        p = _cached(inp, session)
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
        return fetch_base_blob(inp, image=image, session=session)
    if inp.kind == "git":
        return _git_archive(inp, image, session)
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
    if inp.sha256 and _cached(inp, session) is None:
        why = session.unreachable_host(inp.url)
        if why:
            raise InputUnreachable(f"cannot download {inp.url}: {why}", image=image, input=inp.ref,
                                   fix="build where the host is reachable, or point registry/mirrors.toml at a mirror")
    want = download.Want(url=inp.url, sha256=inp.sha256, size=inp.size or None, label=inp.ref, image=image)
    return download.fetch(want, session)


def _git_archive(inp: Input, image: str, session: Session) -> Path:
    """The archive enginefab makes of a git input's tree (transport/git.py), from the download
    cache when it holds the pinned sha256."""
    hit = _cached(inp, session)
    if hit is not None:
        return hit
    why = session.unreachable_host(inp.url or "")
    if why:
        raise InputUnreachable(f"cannot fetch {inp.url}: {why}", image=image, input=inp.ref,
                               fix="build where the host is reachable, or point registry/mirrors.toml at a mirror of the repository")
    pin = git.GitPin(url=inp.url or "", commit=inp.commit or "", tree=inp.tree or "", prefix=inp.prefix or "",
                     label=inp.ref, image=image)
    made = git.archive(pin, inp.sha256, cache=session.downloads, mirrors=session.mirrors)
    if not inp.sha256:  # pinned by its tree alone: say what to pin (lock --check warns until then)
        session.reporter.info(f"{image}: {inp.ref}: the archive of tree {inp.tree} has sha256 {made.sha256} "
                              f"({made.size} bytes); "
                              f'pin it in engines/ ([[image.git]] {inp.name}): sha256 = "{made.sha256}", size = {made.size}')
    return made.path
