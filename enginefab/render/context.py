"""A Dockerfile build context as data (`ContextFile` per relative path) and its one writer.

Text files (the Dockerfile, run steps' scripts) and the files of a `files` layer, each with its
mode, or a symbolic link: `COPY` takes modes and links from the context as they are, so a
layer's tree is written under ``files/<n>/`` exactly as it is in the image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from enginefab.core.errors import EnginefabError


@dataclass(frozen=True)
class ContextFile:
    text: str = ""
    mode: int = 0o644
    #: a symbolic link to this target (text and mode unused)
    link: str | None = None
    #: a directory (text unused)
    directory: bool = False


def write_context(files: dict[str, ContextFile], out: Path) -> None:
    """Write the build context below `out` (created); a path that would leave it is refused."""
    out.mkdir(parents=True, exist_ok=True)
    base = out.resolve()
    for rel in sorted(files):
        f = files[rel]
        dest = out / rel
        if rel.startswith("/") or ".." in Path(rel).parts or base not in (dest.parent.resolve(), *dest.parent.resolve().parents):
            raise EnginefabError(f"the build context's path {rel!r} leaves {out}", fix="re-run `enginefab lock`")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
            dest.unlink()
        if f.link is not None:
            os.symlink(f.link, dest)
        elif f.directory:
            dest.mkdir(exist_ok=True)
        else:
            dest.write_text(f.text)
    for rel in sorted(files, reverse=True):  # modes last: a directory may be read-only
        f = files[rel]
        if f.link is None:
            os.chmod(out / rel, f.mode)
