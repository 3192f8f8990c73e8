"""The ways an HTTP exchange fails, as types: callers branch on the class, never on the text.

`TransportError` and its kinds come from the HTTP stack (`http.py`); the registry client turns
them into `TransportFailed`, a RegistryError with the fix for a registry (`registry_failure`).
"""

from __future__ import annotations

from enginefab.core.errors import EnginefabError, RegistryError


class TransportError(EnginefabError):
    """An HTTP exchange that gave no usable answer; the subclass says how it failed."""

    def __init__(self, message: str, *, host: str, url: str, reason: str = "") -> None:
        super().__init__(message)
        self.host = host
        self.url = url
        self.reason = reason or message  # the cause in a few words ("Connection refused")


class Unreachable(TransportError):
    """No connection: refused, unknown host, no connection in time."""


class NoAnswer(TransportError):
    """Connected and asked, but no answer came before the deadline."""


class Stalled(TransportError):
    """A body stopped moving (either way) for the stall timeout."""


class Broken(TransportError):
    """The connection broke before the answer or its body was complete (a new attempt may work)."""


class TooLarge(TransportError):
    """More bytes than the cap: a descriptor's size, a pinned size, or max_document."""


class ShortBody(TransportError):
    """A file being uploaded ended before the size it was sent as."""


class Cancelled(TransportError):
    """Another part of the same operation failed; this transfer was stopped."""


class TlsFailure(TransportError):
    """TLS failed: `verification` (an untrusted certificate) or `plain_http` (the server speaks HTTP)."""

    def __init__(self, message: str, *, host: str, url: str, verification: bool, plain_http: bool) -> None:
        super().__init__(message, host=host, url=url, reason="TLS failed")
        self.verification = verification
        self.plain_http = plain_http


class NotFound(RegistryError):
    """The registry has no such manifest or blob (HTTP 404)."""


class Mismatch(RegistryError):
    """A blob whose bytes are not what its digest and size say (corrupt or tampered)."""


class TransportFailed(RegistryError):
    """The registry gave no usable answer; `failure` is the typed transport failure."""

    def __init__(self, failure: TransportError, fix: str | None) -> None:
        super().__init__(failure.message, fix=fix)
        self.failure = failure


def registry_failure(e: TransportError, host: str) -> TransportFailed:
    """`e` as a registry error, with what to do about it."""
    if isinstance(e, TlsFailure):
        fix = ("it is not a TLS server: pass --plain-http (only on a network you trust)" if e.plain_http else
               "pass --ca-cert with the registry's CA certificate" if e.verification else
               "check the registry's TLS configuration")
    elif isinstance(e, Unreachable):
        fix = "check that the registry is running and the address is right"
    elif isinstance(e, (NoAnswer, Stalled)):
        fix = (f"the registry at {host} is stuck or overloaded: check its process, disk and load, "
               "then run the command again (a push sends only what is missing)")
    elif isinstance(e, TooLarge):
        fix = "the registry's copy is corrupt or it is hostile: nothing of it was kept"
    elif isinstance(e, ShortBody):
        fix = "the store's copy is damaged: run `enginefab store verify`, then build again"
    elif isinstance(e, Broken):
        fix = "check the registry and the network, then run the command again"
    else:
        fix = None
    return TransportFailed(e, fix)
