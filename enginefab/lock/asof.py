"""The instant an image's Python closure is resolved as of (uv --exclude-newer): closures of their time.

An old engine should get the dependencies that existed around its release, not today's. Three
sources, first that applies:

1. the image's own ``as_of`` (a day or an instant);
2. its engine release's ``published`` day plus ``[pypi] release_grace_days`` (default 90): what
   a user installing the release in its first months got — never later than (3);
3. the matrix-wide ``[pypi] exclude_newer``, which keeps every re-lock the same.

The lock records the instant used: for (1) and (2) as ``matrix.as_of`` (instant and why), for (3)
it is ``matrix.pypi.exclude_newer`` itself — so definitions locked before this existed stay current.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from enginefab.core import instants
from enginefab.engines.matrix import Image
from enginefab.engines.model import PypiSettings


@dataclass(frozen=True)
class AsOf:
    instant: str | None  # RFC 3339 UTC, or None: resolve as of now
    why: str
    recorded: bool  # False: it is the matrix-wide exclude_newer, already in the lock

    def record(self) -> dict[str, str | None]:
        return {"instant": self.instant, "why": self.why}


def as_of(img: Image, pypi: PypiSettings) -> AsOf:
    """When `img`'s closure is resolved as of, and why (pure: engines/ alone decides it)."""
    wide = pypi.exclude_newer
    if img.d.as_of:
        return AsOf(instants.instant(img.d.as_of), f"the image's as_of = {img.d.as_of!r}", True)
    published = img.release.published
    if published:
        grace = pypi.release_grace_days
        end = instants.parse(published) + dt.timedelta(days=grace)
        instant = end.strftime(instants.FORMAT)
        why = f"{img.engine.display} {img.release.version} was published {published}; plus {grace} days' grace"
        if wide and instants.parse(wide) < end:
            return AsOf(instants.instant(wide), why + f", capped by [pypi] exclude_newer = {wide!r}", True)
        return AsOf(instant, why, True)
    return AsOf(wide, "[pypi] exclude_newer (the engine release says no publication day)" if wide else
                "now (neither the release's publication day nor [pypi] exclude_newer is set)", False)
