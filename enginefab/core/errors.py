"""One error type users see: what went wrong, for which image and input, and how to fix it."""

from __future__ import annotations

import errno


class EnginefabError(Exception):
    """An error a user can act on. The CLI prints it without a traceback."""

    def __init__(
        self,
        message: str,
        *,
        image: str | None = None,
        input: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.message = message
        self.image = image
        self.input = input
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.image:
            where.append(f"image {self.image}")
        if self.input:
            where.append(f"input {self.input}")
        text = (", ".join(where) + ": " if where else "") + self.message
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text

    def as_dict(self) -> dict[str, str | None]:
        return {"error": self.message, "image": self.image, "input": self.input, "fix": self.fix}


class MatrixError(EnginefabError):
    """The matrix in engines/ is inconsistent."""


class LockError(EnginefabError):
    """An input could not be resolved or pinned."""


class FetchError(EnginefabError):
    """A download failed or did not match its pin."""


class PinMismatch(FetchError):
    """Fetched, but not the pinned bytes (size, sha256, git tree): a failure of the input, never
    a reach problem (the builder does not call it unreachable)."""


class NoSuchFile(FetchError):
    """The server answered that the file does not exist (HTTP 404)."""


class BuildError(EnginefabError):
    """An image or layer could not be built."""


class UnsafeArchiveError(BuildError):
    """An input archive holds an entry we refuse to put in a layer."""


class CheckError(EnginefabError):
    """A compatibility check could not run (not: a check that failed)."""


class RegistryError(EnginefabError):
    """A registry refused or failed an operation."""


class StorageError(EnginefabError):
    """The store, the cache or the output cannot be written: read-only, full, or not ours."""


_FULL = {errno.ENOSPC, errno.EDQUOT}
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}


def storage_error(e: OSError) -> StorageError | None:
    """The error a user sees for a filesystem that refuses a write (EROFS, ENOSPC, EDQUOT, EACCES,
    EPERM), naming the path and the fix; None for any other OSError."""
    where = e.filename or "a file of the store or the output"
    if e.errno in _FULL:
        return StorageError(f"no space left to write {where} ({e.strerror})",
                            fix="free space on that filesystem (`enginefab store gc` removes what no definition or "
                            "layout needs), or put the store elsewhere: --store DIR or ENGINEFAB_STORE (and --out DIR)")
    if e.errno in _READ_ONLY:
        return StorageError(f"cannot write {where}: {e.strerror}",
                            fix="the store, the output and the download cache must be on a writable filesystem: "
                            "pass --store DIR (or set ENGINEFAB_STORE), --out DIR, or set ENGINEFAB_CACHE to a "
                            "directory you can write")
    return None
