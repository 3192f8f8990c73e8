"""Base-image blobs for the builder: fetched from the registry (or its mirror), verified, cached."""

from __future__ import annotations

from pathlib import Path

from enginefab.core.definition import Input
from enginefab.core.errors import BuildError, EnginefabError
from enginefab.transport import download
from enginefab.transport.client import RegistryClient
from enginefab.transport.reference import parse_reference
from enginefab.transport.session import Session


def fetch_base_blob(inp: Input, *, image: str, session: Session) -> Path:
    """The verified file of a base image's blob in the session's download cache, fetched from its
    registry (or the registry mirror) when the cache lacks it."""
    assert inp.sha256 and inp.url
    cached = download.cached(inp.sha256, session.downloads, reporter=session.reporter)
    if cached:
        return cached
    ref = parse_reference(inp.url)
    host = session.mirrors.registry(ref.registry)
    repo = ref.repository
    if "/" in host:  # a mirror with a path prefix: host/prefix
        host, prefix = host.split("/", 1)
        repo = f"{prefix}/{repo}"
    digest = "sha256:" + inp.sha256
    try:
        client = RegistryClient.for_reference(parse_reference(f"{host}/{repo}@{digest}"), options=session.http_options,
                                              env=session.environ)
        with session.reporter.progress(inp.name, inp.size or None) as bar:
            return client.download_blob_to(repo, digest, download.cache_path(inp.sha256, session.downloads),
                                           progress=bar.advance, size=inp.size or None)
    except EnginefabError as e:
        raise BuildError(
            f"cannot fetch base blob {digest[:19]}… of {inp.name}: {e.message}",
            image=image,
            input=inp.ref,
            fix="make the registry reachable, or mirror it and map it in registry/mirrors.toml [registries]",
        ) from None
