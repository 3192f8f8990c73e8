"""Can a host be reached from here at all (DNS, TCP connect)? Asked before trying a resolver
whose repository may be out of reach, so that the lock can record what it cannot pin yet
instead of failing after retries. Only a network answer: nothing here decides trust."""

from __future__ import annotations

import socket
import urllib.parse

from enginefab.transport.mirrors import Mirrors


def host_of(url: str, mirrors: Mirrors) -> urllib.parse.ParseResult | None:
    """`url` after mirrors, parsed; None when it names no host one connects to (file://)."""
    parsed = urllib.parse.urlparse(mirrors.url(url))
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return None
    return parsed


def unreachable(url: str, mirrors: Mirrors, *, timeout: float = 10) -> str | None:
    """Why the host serving `url` (after mirrors) cannot be reached, or None if it can."""
    parsed = host_of(url, mirrors)
    if parsed is None:
        return None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
    except OSError as e:
        return f"{parsed.hostname} is unreachable from here ({e.strerror or e})"
    return None
