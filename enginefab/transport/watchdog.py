"""The watchdog: every request in flight has a deadline for its answer and, while a body moves,
a stall timeout; one thread checks them and shuts the socket of a request that missed either.

A socket timeout alone cannot do this: a server that trickles a byte every few seconds never
trips one, and a send blocked on a full window trips it only per block. The connection classes
here hand their socket to the request in flight on their thread (`current()`), which is what
lets the watchdog wake a thread blocked in `recv` or `sendall`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any, Iterator
from urllib.parse import urlsplit

import urllib3
import urllib3.connection

from enginefab.transport.options import HttpOptions


def _shut(sock: socket.socket) -> None:
    """Wake whatever thread is blocked on `sock` (the base method: SSLSocket's own drops its state)."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


class Op:
    """One request in flight, with its retries: when its answer is due, when it last moved."""

    def __init__(self, method: str, url: str, what: str, options: HttpOptions,
                 cancel: threading.Event | None = None) -> None:
        now = time.monotonic()
        self.method, self.url, self.what, self.options, self.cancel = method, url, what, options, cancel
        self.host = urlsplit(url).hostname or "?"
        if urlsplit(url).port:
            self.host += f":{urlsplit(url).port}"
        self.due: float | None = now + options.deadline  # the answer's headers; None once they came
        self.moving: str | None = None  # "sending" | "receiving" while a body moves
        self.last = now
        self.expired: str | None = None  # "deadline" | "stall" | "cancelled"
        self.stalled_while = ""
        self._finished = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shut(sock)

    def moved(self, direction: str) -> None:
        with self._lock:
            self.moving, self.last = direction, time.monotonic()

    def sent(self) -> None:
        """The request body is out: the answer is due within the deadline from now."""
        with self._lock:
            self.moving, self.due = None, time.monotonic() + self.options.deadline

    def answered(self) -> None:
        with self._lock:
            self.due, self.moving, self.last = None, "receiving", time.monotonic()

    def finish(self) -> None:
        """Done with its connection (about to go back to the pool): never shut it from now on."""
        with self._lock:
            self._finished = True

    def check(self, now: float) -> None:
        with self._lock:
            if self.expired or self._finished:
                return
            if self.cancel is not None and self.cancel.is_set():
                self.expired = "cancelled"
            elif self.moving and now - self.last > self.options.stall_timeout:
                self.expired, self.stalled_while = "stall", self.moving
            elif self.moving is None and self.due is not None and now > self.due:
                self.expired = "deadline"
            else:
                return
            socks = list(self._sockets)
        for s in socks:
            _shut(s)


class Watchdog:
    """One thread, alive while requests are in flight, checking them every TICK seconds."""

    TICK = 0.2

    def __init__(self) -> None:
        self._ops: set[Op] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, op: Op) -> None:
        with self._lock:
            self._ops.add(op)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="enginefab-http-watchdog", daemon=True)
                self._thread.start()

    def remove(self, op: Op) -> None:
        with self._lock:
            self._ops.discard(op)

    def _run(self) -> None:
        while True:
            time.sleep(self.TICK)
            with self._lock:
                ops = list(self._ops)
                if not ops:
                    self._thread = None
                    return
            now = time.monotonic()
            for op in ops:
                op.check(now)


WATCHDOG = Watchdog()
_local = threading.local()


def current() -> Op | None:
    """The request in flight on this thread (its connection hands it the socket)."""
    return getattr(_local, "op", None)


@contextlib.contextmanager
def watching(op: Op) -> Iterator[Op]:
    """Make `op` this thread's request in flight, checked by the watchdog, for the block."""
    before = current()
    _local.op = op
    WATCHDOG.add(op)
    try:
        yield op
    finally:
        WATCHDOG.remove(op)
        _local.op = before


class _Watched:
    """urllib3 connections that hand their socket to the request in flight on this thread, and
    use the options' socket timeout (a backstop) for sending as well as receiving."""

    sock: socket.socket | None
    timeout: Any

    def _watch(self) -> None:
        op = current()
        if op is not None and self.sock is not None:
            self.timeout = op.options.socket_timeout
            self.sock.settimeout(self.timeout)
            op.attach(self.sock)

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self._watch()

    def request(self, *a: Any, **kw: Any) -> None:
        self._watch()  # a kept-alive connection: connect() is not called again
        super().request(*a, **kw)  # type: ignore[misc]


class _HTTPConnection(_Watched, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_Watched, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


POOLS = {"http": _HTTPPool, "https": _HTTPSPool}
