"""Fetch bytes by URL into the content-addressed download cache, verified against their pin.

A file lands at ``downloads/sha256/<hex>`` only after its size and sha256 were checked while
streaming, and only by an atomic rename: a killed download leaves a temporary file, never a
wrong cache entry. Mirrors rewrite URLs (`lock.mirrors`); ``file://`` URLs work too.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import requests

from enginefab.core import ui
from enginefab.core.errors import FetchError
from enginefab.core.paths import downloads_dir
from enginefab.transport import mirrors as mirrors_mod

CHUNK = 1 << 20
TIMEOUT = (10, 60)  # connect, read (seconds)
ATTEMPTS = 3

_session: requests.Session | None = None


def session() -> requests.Session:
    global _session
    if _session is None:
        s = requests.Session()
        s.headers["User-Agent"] = "enginefab/0.1 (+reproducible engine images)"
        _session = s
    return _session


@dataclass(frozen=True)
class Want:
    """What to fetch and what it must be."""

    url: str
    sha256: str | None  # None: fetch to learn the hash (lock time only)
    size: int | None = None  # None or 0: unknown
    label: str = ""  # input name for messages
    image: str | None = None


def cache_path(sha256: str, root: Path | None = None) -> Path:
    return (root or downloads_dir()) / "sha256" / sha256


def cached(sha256: str) -> Path | None:
    p = cache_path(sha256)
    return p if p.is_file() else None


def fetch(want: Want, *, cache: Path | None = None) -> Path:
    """The verified local path of `want`, downloading it if the cache lacks it."""
    root = cache or downloads_dir()
    if want.sha256:
        p = cache_path(want.sha256, root)
        if p.is_file():
            return p
    url = mirrors_mod.current().url(want.url)
    last: Exception | None = None
    for attempt in range(ATTEMPTS):
        try:
            return _download(url, want, root)
        except _Retryable as e:
            last = e.__cause__ or e
            _backoff(attempt)
    raise FetchError(
        f"cannot download {url} ({cause(last)})",
        image=want.image,
        input=want.label or None,
        fix="check the network, or point registry/mirrors.toml (or $ENGINEFAB_MIRRORS) at a mirror",
    )


class _Retryable(Exception):
    pass


def _backoff(attempt: int) -> None:
    if attempt < ATTEMPTS - 1:  # no pointless wait after the last attempt
        time.sleep(min(2**attempt, 4))


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def cause(e: BaseException | None) -> str:
    """The root cause of a network error in a few words ("Connection refused")."""
    text = str(e) if e is not None else "unknown error"
    m = _ERRNO.search(text)
    if m:
        return m.group(1).strip()
    for marker in ("Read timed out", "Connect timeout", "timed out", "SSLError", "RemoteDisconnected"):
        if marker in text:
            return marker
    return text if len(text) <= 160 else text[:157] + "..."


def _download(url: str, want: Want, root: Path) -> Path:
    tmpdir = root / "tmp"
    tmpdir.mkdir(parents=True, exist_ok=True)
    tmp = tmpdir / f"{os.getpid()}-{time.monotonic_ns()}.part"
    h = hashlib.sha256()
    n = 0
    try:
        with open(tmp, "wb") as out:
            for chunk in _stream(url, want):
                h.update(chunk)
                n += len(chunk)
                out.write(chunk)
        got = h.hexdigest()
        if want.size and n != want.size:
            raise FetchError(
                f"{url} gave {n} bytes, the pin says {want.size}"
                + (" (truncated download)" if n < want.size else ""),
                image=want.image,
                input=want.label or None,
                fix="try again; if it persists the file changed upstream or the mirror is wrong",
            )
        if want.sha256 and got != want.sha256:
            raise FetchError(
                f"{url} has sha256 {got}, the pin says {want.sha256}",
                image=want.image,
                input=want.label or None,
                fix="the bytes differ from the locked ones: if upstream really changed the file, "
                "re-run `enginefab lock` and review the diff; otherwise fix the mirror",
            )
        dest = cache_path(got, root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o444)
        os.replace(tmp, dest)
        return dest
    finally:
        if tmp.exists():
            tmp.unlink()


def _stream(url: str, want: Want):
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        path = Path(urllib.parse.unquote(parsed.path))
        if not path.is_file():
            raise FetchError(f"{path} does not exist", image=want.image, input=want.label or None,
                             fix="check the mirror directory")
        with open(path, "rb") as f, ui.bytes_progress(want.label or path.name, path.stat().st_size) as bar:
            while chunk := f.read(CHUNK):
                bar.advance(len(chunk))
                yield chunk
        return
    if parsed.scheme not in ("http", "https"):
        raise FetchError(f"unsupported URL scheme in {url}", image=want.image, input=want.label or None)
    try:
        r = session().get(url, stream=True, timeout=TIMEOUT)
    except requests.RequestException as e:
        raise _Retryable() from e
    with r:
        if r.status_code == 404:
            raise FetchError(f"{url} does not exist (404)", image=want.image, input=want.label or None,
                             fix="the file was removed upstream: use a mirror that keeps it, or re-lock")
        if r.status_code >= 500 or r.status_code == 429:
            raise _Retryable() from requests.HTTPError(f"HTTP {r.status_code}")
        if r.status_code != 200:
            raise FetchError(f"{url} answered HTTP {r.status_code}", image=want.image, input=want.label or None)
        total = int(r.headers.get("Content-Length") or 0) or want.size or None
        with ui.bytes_progress(want.label or url.rsplit("/", 1)[-1], total) as bar:
            try:
                for chunk in r.iter_content(CHUNK):
                    bar.advance(len(chunk))
                    yield chunk
            except requests.RequestException as e:
                raise _Retryable() from e


def get_json(url: str, *, headers: dict[str, str] | None = None, label: str = "") -> object:
    """GET a small JSON document (indexes), with timeouts and clear errors."""
    url = mirrors_mod.current().url(url)
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        import json

        path = Path(urllib.parse.unquote(parsed.path))
        if path.is_dir():
            path = path / "index.json"
        try:
            return json.loads(path.read_bytes())
        except FileNotFoundError:
            raise FetchError(f"{path} does not exist", input=label or None) from None
    last: Exception | None = None
    for attempt in range(ATTEMPTS):
        try:
            r = session().get(url, headers=headers or {}, timeout=TIMEOUT)
        except requests.RequestException as e:
            last = e
            _backoff(attempt)
            continue
        if r.status_code == 404:
            raise FetchError(f"{url} does not exist (404)", input=label or None)
        if r.status_code >= 500:
            last = requests.HTTPError(f"HTTP {r.status_code}")
            _backoff(attempt)
            continue
        if r.status_code != 200:
            raise FetchError(f"{url} answered HTTP {r.status_code}", input=label or None)
        try:
            return r.json()
        except ValueError:
            raise FetchError(f"{url} did not answer JSON (is it a PEP 691 simple index?)", input=label or None,
                             fix="point [pypi] index in registry/mirrors.toml at a PyPI-compatible index") from None
    raise FetchError(
        f"cannot reach {url} ({cause(last)})",
        input=label or None,
        fix="check the network, or point registry/mirrors.toml (or $ENGINEFAB_MIRRORS) at a mirror",
    )


def get_bytes(url: str, *, label: str = "") -> bytes:
    """GET a small document (apt indexes) through the cache-less path."""
    want = Want(url=url, sha256=None, label=label)
    path = fetch(want)
    return path.read_bytes()


Progress = Callable[[int], None]
