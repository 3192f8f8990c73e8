"""Days and instants as people write them in engines/ (``2021-03-04``, ``2021-03-04T00:00:00Z``)."""

from __future__ import annotations

import datetime as dt
import re

_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_INSTANT = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")
FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def checked(v: str, *, day_only: bool = False) -> str:
    """`v` itself when it is a real day (or, unless `day_only`, an RFC 3339 UTC instant), else ValueError."""
    try:
        ok = (_DAY.match(v) or (not day_only and _INSTANT.match(v))) and dt.date.fromisoformat(v[:10])
    except ValueError:
        ok = None
    if not ok:
        raise ValueError(f"{v!r} is not a day (YYYY-MM-DD)" + ("" if day_only else " or an instant (YYYY-MM-DDTHH:MM:SSZ)"))
    return v


def instant(day_or_instant: str) -> str:
    """A day means its first second (UTC)."""
    return day_or_instant if "T" in day_or_instant else f"{day_or_instant}T00:00:00Z"


def parse(value: str) -> dt.datetime:
    return dt.datetime.strptime(instant(value), FORMAT)
