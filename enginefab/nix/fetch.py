"""The fixed-output fetcher of base-image blobs: `enginefab nix fetch-blob REF@DIGEST`.

A registry blob is not a plain URL (Docker Hub wants a bearer token even for public images), so
nix/fetch.nix cannot use builtin:fetchurl for it; this runs the registry client the CLI uses
(token auth, registry mirrors from $ENGINEFAB_MIRRORS) and writes the verified blob to $out.
Nix checks the result against the lock's sha256 again.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from enginefab.core.definition import Input
from enginefab.core.errors import BuildError
from enginefab.transport.blobs import fetch_base_blob


def fetch_blob(reference: str, size: int, out: Path) -> Path:
    """Download the blob `reference` (``repo@sha256:…``, any registry) to `out`."""
    name, sep, digest = reference.rpartition("@")
    if not sep or not digest.startswith("sha256:") or len(digest) != 71:
        raise BuildError(f"{reference!r} is not a blob reference NAME@sha256:HEX", fix="pass the input's url from the lock")
    inp = Input(kind="oci", name=name, version="blob", url=reference, sha256=digest.split(":", 1)[1], size=size)
    # a private download cache: a Nix build has no usable $HOME and must not share state
    with tempfile.TemporaryDirectory(prefix="enginefab-blob-") as cache:
        previous = os.environ.get("ENGINEFAB_CACHE")
        os.environ["ENGINEFAB_CACHE"] = cache
        try:
            got = fetch_base_blob(inp, image=name)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(got, out)
        finally:
            if previous is None:
                os.environ.pop("ENGINEFAB_CACHE", None)
            else:
                os.environ["ENGINEFAB_CACHE"] = previous
    return out
