"""Canonical JSON and digests: every byte we write that others hash goes through here."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def dumps(obj: Any) -> bytes:
    """Canonical JSON: sorted keys, no insignificant white space, UTF-8, no NaN."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def dumps_pretty(obj: Any) -> bytes:
    """Canonical, reviewable JSON for committed files: sorted keys, 1-space indent, final newline.

    Deterministic like `dumps`, but diffs of `build/*.json` read line by line.
    """
    text = json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest(data: bytes) -> str:
    """OCI digest string of some bytes."""
    return "sha256:" + sha256_hex(data)


def key_of(obj: Any) -> str:
    """A stable hex key for any JSON-able value (action cache keys, plan ids)."""
    return sha256_hex(dumps(obj))
