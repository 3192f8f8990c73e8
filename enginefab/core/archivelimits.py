"""How far one input archive may expand (the value; `assemble.limits` counts against it).

A setting like the others (`core.settings`): built at the edge from `--archive-max-…` or
``ENGINEFAB_ARCHIVE_MAX_*`` and passed down to the stagers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArchiveLimits:
    max_bytes: int = 16 << 30  # expanded bytes of regular files
    max_entries: int = 50_000
    max_ratio: int = 100  # expanded bytes per archive byte …
    ratio_floor: int = 16 << 20  # … once more than this has been expanded


DEFAULT = ArchiveLimits()
