"""How patient the HTTP stack is: timeouts, the deadline, the stall timeout, retries and size caps.

One frozen value, part of the settings built at the edge (`core.settings`) and passed down to
every `Http`; nothing below reads an environment variable. The defaults bound every failure we know of to well under
30 s (bench/faults.py measures them):

=====================  ========================================================================
connect_timeout  5 s   to open a TCP (and TLS) connection; refused connections fail at once
deadline        20 s   from sending a request (the last byte of its body, if it has one) to its
                       answer's status line and headers, retries and their pauses included
stall_timeout   10 s   while a body moves, either way: no byte sent or received for this long
                       aborts the transfer (a stopped registry, a dead link)
retries            2   more attempts, only when nothing was sent (connection refused, timed out)
                       or when a GET/HEAD got 429, 500, 502, 503 or 504; pauses of
                       `backoff` doubling up to `backoff_max` (a Retry-After is capped there too)
max_document  64 MiB   a manifest, index or JSON page read into memory
max_download  64 GiB   a download whose size nobody pinned (a blob's size is its descriptor's)
=====================  ========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HttpOptions:
    connect_timeout: float = 5.0
    deadline: float = 20.0
    stall_timeout: float = 10.0
    retries: int = 2
    backoff: float = 0.5
    backoff_max: float = 2.0
    max_document: int = 64 << 20
    max_download: int = 64 << 30

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "deadline", "stall_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"HttpOptions.{name} must be positive, not {getattr(self, name)!r}")
        if not 0 <= self.retries <= 10:
            raise ValueError(f"HttpOptions.retries must be 0…10, not {self.retries!r}")

    @property
    def socket_timeout(self) -> float:
        """The socket-level timeout: a backstop behind the watchdog, which enforces the deadline
        and the stall timeout precisely."""
        return max(self.deadline, self.stall_timeout) + 5.0


DEFAULT = HttpOptions()
