"""Fetch bytes by URL into the content-addressed download cache, verified against their pin.

Over the one HTTP stack (`http.Http`, its retries, deadline and stall timeout). A file lands at
``downloads/sha256/<hex>`` only after its size and sha256 were checked while streaming, and
only by an atomic rename of a file that had no name before (`landing.py`): a killed download
leaves nothing. No more bytes than the pinned size are ever read (an endless answer stops
there). A connection that broke is tried again from the start (`options.retries`); a server
that stalls, lies about sizes or answers 4xx is not. Mirrors rewrite URLs (`mirrors.py`);
``file://`` URLs work too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from enginefab.core.errors import FetchError, LockError, NoSuchFile, PinMismatch
from enginefab.core.fsutil import sha256_file, stat_key, write_atomic
from enginefab.core.reporter import SILENT, Reporter
from enginefab.transport.http import CHUNK, Broken, Http, TooLarge, TransportError, Unreachable
from enginefab.transport.landing import landing
from enginefab.transport.session import Session

_HEX64 = re.compile(r"\A[0-9a-f]{64}\Z")
MIRROR_FIX = "check the network, or point registry/mirrors.toml (or $ENGINEFAB_MIRRORS) at a mirror"

@dataclass(frozen=True)
class Want:
    """What to fetch and what it must be."""

    url: str
    sha256: str | None  # None: fetch to learn the hash (lock time only)
    size: int | None = None  # None or 0: unknown
    label: str = ""  # input name for messages
    image: str | None = None


def cache_path(sha256: str, root: Path) -> Path:
    """The cache's file for these bytes; anything but 64 lowercase hex digits is refused, so a
    hostile pin (`../../etc/shadow`) never names a host path (to read, or to delete as damaged)."""
    if not isinstance(sha256, str) or not _HEX64.match(sha256):
        raise LockError(f"{str(sha256)[:100]!r} is not a sha256 (64 lowercase hex digits)",
                         fix="the pin is malformed: re-lock the image (`enginefab lock NAME`) and review the diff")
    return root / "sha256" / sha256


def cached(sha256: str, root: Path, size: int | None = None, *, reporter: Reporter = SILENT) -> Path | None:
    """The download cache `root`'s file of these bytes, if it has them intact. Trusted without
    reading when its stat is the one recorded when it was last hashed (``verified/<hex>``);
    otherwise hashed now: a damaged entry is removed (and so fetched again), never returned."""
    p = cache_path(sha256, root)
    try:
        st = os.stat(p)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if size and st.st_size != size:
        _discard(p, root)
        return None
    marker = root / "verified" / sha256
    try:
        if marker.read_text() == stat_key(st):
            return p
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    if sha256_file(p)[0] != sha256:
        reporter.warn(f"the download cache's {p} is damaged (its bytes do not hash to its name): "
                "removed, fetched again")
        _discard(p, root)
        return None
    _mark_verified(p, root, sha256)
    return p


def _mark_verified(p: Path, root: Path, sha256: str) -> None:
    with contextlib.suppress(OSError):  # a read-only cache still serves; it only re-hashes
        write_atomic(root / "verified" / sha256, stat_key(os.stat(p)).encode())


def _discard(p: Path, root: Path) -> None:
    for q in (p, root / "verified" / p.name):
        with contextlib.suppress(FileNotFoundError):
            q.unlink()


def fetch(want: Want, session: Session, *, http: Http | None = None) -> Path:
    """The verified local path of `want` in the session's download cache, downloading it (through
    the session's mirrors) if the cache lacks it or holds it damaged."""
    root = session.downloads
    if want.sha256:
        p = cached(want.sha256, root, want.size, reporter=session.reporter)
        if p is not None:
            return p
    url = session.mirrors.url(want.url)
    http = http or session.http()
    attempt = 0
    while True:
        try:
            return _download(url, want, root, http, session.reporter)
        except Broken as e:
            attempt += 1
            if attempt > http.options.retries:
                raise _failed(e, url, want) from None
        except TransportError as e:
            raise _failed(e, url, want) from None


def _failed(e: TransportError, url: str, want: Want) -> FetchError:
    where = {"image": want.image, "input": want.label or None}
    if isinstance(e, Unreachable):
        return FetchError(f"cannot download {url} ({e.reason})", fix=MIRROR_FIX, **where)
    if isinstance(e, TooLarge):
        return FetchError(f"{e.message} ({url})", fix="the server sends other bytes than the pinned ones: "
                          "fix the mirror, or re-lock if upstream really changed the file", **where)
    return FetchError(e.message, fix=MIRROR_FIX, **where)


def _download(url: str, want: Want, root: Path, http: Http, reporter: Reporter) -> Path:
    h = hashlib.sha256()
    n = 0
    with landing(root / "sha256", mode=0o444) as out:
        for chunk in _stream(url, want, http, reporter):
            h.update(chunk)
            n += len(chunk)
            out.file.write(chunk)
        got = h.hexdigest()
        if want.size and n != want.size:
            raise PinMismatch(f"{url} gave {n} bytes, the pin says {want.size} (truncated download)",
                             image=want.image, input=want.label or None,
                             fix="try again; if it persists the file changed upstream or the mirror is wrong")
        if want.sha256 and got != want.sha256:
            raise PinMismatch(
                f"{url} has sha256 {got}, the pin says {want.sha256}",
                image=want.image,
                input=want.label or None,
                fix="the bytes differ from the locked ones: if upstream really changed the file, "
                "re-run `enginefab lock` and review the diff; otherwise fix the mirror",
            )
        path = out.commit(cache_path(got, root))
    _mark_verified(path, root, got)  # hashed while it streamed
    return path


def _stream(url: str, want: Want, http: Http, reporter: Reporter) -> Iterator[bytes]:
    """The bytes at `url`, never more than the pinned size (or max_download)."""
    parsed = urllib.parse.urlparse(url)
    limit = want.size or http.options.max_download
    where = {"image": want.image, "input": want.label or None}
    if parsed.scheme == "file":
        yield from _file(Path(urllib.parse.unquote(parsed.path)), limit, want, reporter)
        return
    if parsed.scheme not in ("http", "https"):
        raise FetchError(f"unsupported URL scheme in {url}", **where)
    name = want.label or url.rsplit("/", 1)[-1]
    with http.stream("GET", url, what=name, headers={"Accept-Encoding": "identity"}) as s:
        if s.status == 404:
            raise NoSuchFile(f"{url} does not exist (404)", **where,
                             fix="the file was removed upstream: use a mirror that keeps it, or re-lock")
        if s.status != 200:
            raise _status_error(s.status, url, where)
        with reporter.progress(name, s.length or want.size or None) as bar:
            yield from s.chunks(limit=limit, progress=bar.advance)


def _file(path: Path, limit: int, want: Want, reporter: Reporter) -> Iterator[bytes]:
    if not path.is_file():
        raise FetchError(f"{path} does not exist", image=want.image, input=want.label or None,
                         fix="check the mirror directory")
    n = 0
    with open(path, "rb") as f, reporter.progress(want.label or path.name, path.stat().st_size) as bar:
        while chunk := f.read(CHUNK):
            n += len(chunk)
            if n > limit:
                raise FetchError(f"{path} is larger than the {limit} bytes pinned", image=want.image,
                                 input=want.label or None, fix="fix the mirror, or re-lock")
            bar.advance(len(chunk))
            yield chunk


def _status_error(status: int, url: str, where: dict) -> FetchError:
    host = urllib.parse.urlsplit(url).netloc
    if status >= 500 or status == 429:
        return FetchError(f"HTTP {status} from {host} for {url}", **where,
                          fix="the server failed on its side: try again later, or use a mirror (registry/mirrors.toml)")
    return FetchError(f"{url} answered HTTP {status}", **where)


def get_json(url: str, session: Session, *, headers: dict[str, str] | None = None, label: str = "",
             http: Http | None = None) -> object:
    """GET a small JSON document (indexes), under max_document, with clear errors."""
    url = session.mirrors.url(url)
    parsed = urllib.parse.urlparse(url)
    where = {"input": label or None}
    if parsed.scheme == "file":
        path = Path(urllib.parse.unquote(parsed.path))
        if path.is_dir():
            path = path / "index.json"
        try:
            return json.loads(path.read_bytes())
        except FileNotFoundError:
            raise FetchError(f"{path} does not exist", **where) from None
    http = http or session.http()
    try:
        r = http.send("GET", url, what=label or url, headers=headers)
    except Unreachable as e:
        raise FetchError(f"cannot reach {url} ({e.reason})", fix=MIRROR_FIX, **where) from None
    except TransportError as e:
        raise FetchError(e.message, fix=MIRROR_FIX, **where) from None
    if r.status == 404:
        raise NoSuchFile(f"{url} does not exist (404)", **where)
    if r.status != 200:
        raise _status_error(r.status, url, where)
    try:
        return json.loads(r.content)
    except ValueError:
        raise FetchError(f"{url} did not answer JSON (is it a PEP 691 simple index?)", **where,
                         fix="point [pypi] index in registry/mirrors.toml at a PyPI-compatible index") from None


def get_bytes(url: str, session: Session, *, label: str = "") -> bytes:
    """GET a small document (apt indexes) through the cache-less path."""
    want = Want(url=url, sha256=None, label=label)
    path = fetch(want, session)
    return path.read_bytes()

