"""The one HTTP stack: every download and every registry request goes through an `Http`.

- one requests Session per `Http`, its adapter retrying with urllib3's `Retry`: few attempts,
  only when nothing was sent or a GET/HEAD got 429/5xx, short capped pauses (options.py);
- a watchdog that holds each request to its deadline (the answer's headers) and, while a body
  moves, to the stall timeout, by shutting the request's socket down; the failure then names the
  host, what was asked for and what it was waiting for;
- bodies read under a size cap (`Reply`, `Stream.chunks`) and uploads that send exactly their
  declared size (`Body`): an endless blob stops at its descriptor's size, a truncated file fails
  at once instead of leaving the server waiting for the missing bytes;
- typed failures (`TransportError` and its kinds), so callers never read error text.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterator, Mapping
from urllib.parse import urlsplit

import requests
import requests.adapters
import urllib3
from urllib3.util.retry import Retry

from enginefab.transport.errors import (Broken, Cancelled, NoAnswer, ShortBody, Stalled, TlsFailure, TooLarge,
                                        TransportError, Unreachable)
from enginefab.transport.options import DEFAULT, HttpOptions
from enginefab.transport.watchdog import POOLS, Op, current, watching

CHUNK = 1 << 20
USER_AGENT = "enginefab/0.1 (+reproducible engine images)"
Progress = Callable[[int], None]


class _Retry(Retry):
    """urllib3's Retry with a server's Retry-After capped like our own pauses."""

    def get_retry_after(self, response: Any) -> float | None:
        seconds = super().get_retry_after(response)
        return None if seconds is None else min(seconds, self.backoff_max)


def retry_policy(o: HttpOptions) -> Retry:
    """Retry when nothing was sent, or when a read (GET/HEAD) got 429/5xx; never after a body
    was sent or an answer half-read: the deadline and the stall timeout decide those."""
    return _Retry(total=o.retries, connect=o.retries, read=0, status=o.retries, other=0,
                  allowed_methods=frozenset({"GET", "HEAD"}), status_forcelist=(429, 500, 502, 503, 504),
                  backoff_factor=o.backoff, backoff_max=o.backoff_max, raise_on_status=False,
                  raise_on_redirect=False)


class _Adapter(requests.adapters.HTTPAdapter):
    def init_poolmanager(self, *a: Any, **kw: Any) -> None:
        kw.setdefault("blocksize", CHUNK)  # send blocks of 1 MiB, not 16 KiB: streamed layer uploads
        super().init_poolmanager(*a, **kw)
        self.poolmanager.pool_classes_by_scheme = POOLS

    def proxy_manager_for(self, *a: Any, **kw: Any) -> Any:
        manager = super().proxy_manager_for(*a, **kw)
        manager.pool_classes_by_scheme = POOLS
        return manager


# -- requests and answers ---------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """An answer read whole (under max_document)."""

    status: int
    headers: Mapping[str, str]
    content: bytes
    url: str

    def header(self, name: str) -> str:
        return self.headers.get(name, "")


class Body:
    """A file as a request body: exactly `size` bytes, read in CHUNK blocks, progress reported;
    it stops the transfer if the file ends early or the `Http`'s cancel event is set."""

    def __init__(self, f: IO[bytes], size: int, *, what: str, progress: Progress | None = None) -> None:
        self._f, self._size, self._what, self._progress = f, size, what, progress
        self._sent = 0

    def __len__(self) -> int:
        return self._size

    def read(self, n: int = -1) -> bytes:
        op = current()
        host, url = (op.host, op.url) if op else ("?", "?")
        if op and op.cancel is not None and op.cancel.is_set():
            raise Cancelled(f"the upload of {self._what} was stopped: another part of the operation failed",
                            host=host, url=url)
        want = min(CHUNK if n is None or n < 0 else n, self._size - self._sent)
        if want <= 0:
            if op:
                op.sent()
            return b""
        data = self._f.read(want)
        if not data:
            raise ShortBody(f"{self._what} ended after {self._sent} of its {self._size} bytes: not sent",
                            host=host, url=url)
        self._sent += len(data)
        if op:
            op.moved("sending")
        if self._progress:
            self._progress(len(data))
        return data


class Stream:
    """An answer whose body is read in chunks, under a cap, while the watchdog watches it move
    (read it promptly: a reader that pauses for the stall timeout is taken for a stalled server)."""

    def __init__(self, http: "Http", r: requests.Response, op: Op) -> None:
        self._http, self._r, self._op = http, r, op
        self.status = r.status_code
        self.headers = r.headers
        self.url = r.url

    @property
    def length(self) -> int | None:
        try:
            n = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return None
        return n if n >= 0 else None

    def chunks(self, *, limit: int, progress: Progress | None = None, decode: bool = False) -> Iterator[bytes]:
        """The body's bytes (as sent: `decode=False` keeps a Content-Encoding), never more than `limit`."""
        op = self._op
        if op.method == "HEAD" or self.status in (204, 304):
            return  # no body, whatever Content-Length says (a HEAD's is the size of what a GET gets)
        if self.length is not None and self.length > limit:
            raise TooLarge(f"{op.host} announced {self.length} bytes for {op.what}, more than the {limit} "
                           "expected: refused", host=op.host, url=op.url)
        n = 0
        try:
            for chunk in self._r.raw.stream(CHUNK, decode_content=decode):
                n += len(chunk)
                if n > limit:
                    raise TooLarge(f"{op.host} sent more than the {limit} bytes expected for {op.what}: stopped",
                                   host=op.host, url=op.url)
                op.moved("receiving")
                if progress:
                    progress(len(chunk))
                yield chunk
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, http.client.HTTPException) as e:
            raise self._http.failure(e, op) from None
        if op.expired:
            raise self._http.failure(None, op)

    def read(self, limit: int | None = None) -> bytes:
        return b"".join(self.chunks(limit=limit or self._http.options.max_document, decode=True))


class Http:
    """A session with the retry policy, the watchdog, TLS settings and size caps of `options`.
    Setting `cancel` stops every request in flight (within a watchdog tick) and refuses new ones."""

    def __init__(self, options: HttpOptions = DEFAULT, *, verify: bool | str = True, pool: int = 16) -> None:
        self.options = options
        self.verify = verify
        self.cancel = threading.Event()
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        adapter = _Adapter(max_retries=retry_policy(options), pool_connections=4, pool_maxsize=pool)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    @contextlib.contextmanager
    def stream(self, method: str, url: str, *, what: str, headers: Mapping[str, str] | None = None,
               params: Any = None, data: Any = None) -> Iterator[Stream]:
        """Send a request; the answer's body is read inside the block (`Stream.chunks`)."""
        op = Op(method, url, what, self.options, self.cancel)
        if self.cancel.is_set():
            raise Cancelled(f"{what} was not started: another part of the operation failed", host=op.host, url=url)
        with watching(op):
            try:
                r = self.session.request(method, url, headers=dict(headers or {}), params=params, data=data,
                                         stream=True, verify=self.verify,
                                         timeout=(self.options.connect_timeout, self.options.socket_timeout))
            except requests.RequestException as e:
                raise self.failure(e, op) from None
            if op.expired:  # the socket was shut as the answer came: do not trust it
                r.close()
                raise self.failure(None, op)
            op.answered()
            try:
                yield Stream(self, r, op)
            finally:
                op.finish()  # before the connection goes back to the pool for another request
                r.close()

    def send(self, method: str, url: str, *, what: str, headers: Mapping[str, str] | None = None,
             params: Any = None, data: Any = None, limit: int | None = None) -> Reply:
        """Send a request and read its whole answer (at most `limit`, default max_document)."""
        with self.stream(method, url, what=what, headers=headers, params=params, data=data) as s:
            return Reply(s.status, s.headers, s.read(limit), s.url)

    # -- what went wrong ------------------------------------------------------------------
    def failure(self, e: BaseException | None, op: Op) -> TransportError:
        """The typed failure for an exception raised during `op` (None: the watchdog stopped it)."""
        o, host, url = self.options, op.host, op.url
        asked = f"{op.method} {url.split('?', 1)[0]}"
        if op.expired == "cancelled":
            return Cancelled(f"{op.what} was stopped: another part of the operation failed", host=host, url=url)
        if op.expired == "stall":
            doing = "sending" if op.stalled_while == "sending" else "receiving"
            why = f"no progress for {o.stall_timeout:g} s"
            return Stalled(f"{host} stopped {'taking' if doing == 'sending' else 'sending'} {op.what}: {why} "
                           f"while {doing} ({asked})", host=host, url=url, reason=why)
        if op.expired == "deadline":
            why = f"no answer within {o.deadline:g} s"
            return NoAnswer(f"{host} gave {why} to {op.what} (waiting for the answer to {asked})",
                            host=host, url=url, reason=why)
        chain = list(_causes(e))
        ssl_err = next((x for x in chain if isinstance(x, ssl.SSLError)), None)
        if ssl_err is not None or isinstance(e, requests.exceptions.SSLError):
            return self._tls_failure(ssl_err, op)
        if any(isinstance(x, socket.gaierror) for x in chain):
            return Unreachable(f"cannot reach {host}: unknown host", host=host, url=url, reason="unknown host")
        if any(isinstance(x, urllib3.exceptions.NewConnectionError) for x in chain):
            why = _reason(chain)
            return Unreachable(f"cannot reach {host}: {why}", host=host, url=url, reason=why)
        if any(isinstance(x, urllib3.exceptions.ConnectTimeoutError) for x in chain):
            why = f"no connection within {o.connect_timeout:g} s"
            return Unreachable(f"cannot reach {host}: {why}", host=host, url=url, reason=why)
        if any(isinstance(x, (urllib3.exceptions.ReadTimeoutError, TimeoutError)) for x in chain):
            why = f"no answer within {o.socket_timeout:g} s"
            return NoAnswer(f"{host} gave {why} to {op.what} (waiting for the answer to {asked})",
                            host=host, url=url, reason=why)
        why = _reason(chain)
        return Broken(f"cannot reach {host} any more: the connection broke during {op.what} ({why})",
                      host=host, url=url, reason=why)

    def _tls_failure(self, err: ssl.SSLError | None, op: Op) -> TlsFailure:
        host, url = op.host, op.url
        if isinstance(err, ssl.SSLCertVerificationError):
            return TlsFailure(f"TLS verification of {host} failed: {err.verify_message or err.reason}",
                              host=host, url=url, verification=True, plain_http=False)
        if _speaks_plain_http(url, self.options.connect_timeout):
            return TlsFailure(f"{host} speaks plain HTTP, not HTTPS", host=host, url=url, verification=False,
                              plain_http=True)
        why = getattr(err, "reason", None) or "handshake failed"
        return TlsFailure(f"the TLS handshake with {host} failed ({why})", host=host, url=url, verification=False,
                          plain_http=False)


def _causes(e: BaseException | None) -> Iterator[BaseException]:
    """`e` and everything it wraps (causes, contexts, urllib3's `reason`, exception arguments)."""
    seen: set[int] = set()
    todo = [e]
    while todo:
        x = todo.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        yield x
        todo += [x.__cause__, x.__context__, getattr(x, "reason", None) if isinstance(getattr(x, "reason", None),
                 BaseException) else None, *(a for a in x.args if isinstance(a, BaseException))]


def _reason(chain: list[BaseException]) -> str:
    """The root cause in a few words: the OS's text for an errno, else the exception's kind."""
    for x in chain:
        if isinstance(x, OSError) and x.errno:
            return os.strerror(x.errno)
    for x in chain:
        if isinstance(x, http.client.RemoteDisconnected):
            return "the server closed the connection without answering"
        if isinstance(x, (http.client.IncompleteRead, urllib3.exceptions.IncompleteRead)):
            return "the answer ended early"
    return type(chain[0]).__name__ if chain else "unknown error"


def _speaks_plain_http(url: str, timeout: float) -> bool:
    """Does the server at `url`'s address answer plain HTTP (so a TLS failure means: wrong scheme)?"""
    u = urlsplit(url)
    try:
        with socket.create_connection((u.hostname or "", u.port or 443), timeout=timeout) as s:
            s.sendall(f"HEAD / HTTP/1.0\r\nHost: {u.netloc}\r\n\r\n".encode())
            return s.recv(5) == b"HTTP/"
    except OSError:
        return False
