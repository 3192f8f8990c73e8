"""The fixed-output fetcher of base-image blobs: `enginefab nix fetch-blob REF@DIGEST`.

A registry blob is not a plain URL (Docker Hub wants a bearer token even for public images), so
nix/fetch.nix cannot use builtin:fetchurl for it; this runs the registry client the CLI uses
(token auth, registry mirrors from $ENGINEFAB_MIRRORS, read at the edge) and writes the verified blob to $out.
Nix checks the result against the lock's sha256 again.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from enginefab.core.definition import Input
from enginefab.core.errors import BuildError
from enginefab.transport.blobs import fetch_base_blob
from enginefab.transport.session import Session


def fetch_blob(reference: str, size: int, out: Path, session: Session) -> Path:
    """Download the blob `reference` (``repo@sha256:…``, any registry) to `out`, through the
    session's mirrors and credentials but never its download cache."""
    name, sep, digest = reference.rpartition("@")
    if not sep or not digest.startswith("sha256:") or len(digest) != 71:
        raise BuildError(f"{reference!r} is not a blob reference NAME@sha256:HEX", fix="pass the input's url from the lock")
    inp = Input(kind="oci", name=name, version="blob", url=reference, sha256=digest.split(":", 1)[1], size=size)
    # a private download cache: a Nix build has no usable $HOME and must not share state
    with tempfile.TemporaryDirectory(prefix="enginefab-blob-") as cache:
        got = fetch_base_blob(inp, image=name, session=replace(session, downloads=Path(cache)))
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(got, out)
    return out
