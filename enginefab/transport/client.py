"""The OCI distribution client: one registry host, over the one HTTP stack (`http.Http`).

What it does, openly and in one place: authentication learned from `/v2/` before any body is
sent (basic credentials on every request; bearer tokens fetched per scope set, with pull on a
mount's source, renewed before they expire); manifests PUT as our exact bytes and checked
against Docker-Content-Digest; blobs uploaded as a stream of exactly their size, or mounted
from another repository; downloads hashed while they stream, capped at their descriptor's size
and landed only when digest and size match; referrers from the API or the fallback tag.

From oras it takes the artifact conventions (the manifest media types a pull accepts). Where
plain oras 0.2.x falls short of this is shown, with runnable demonstrations, in docs/oras-gaps/.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Iterator, Mapping
from urllib.parse import parse_qs, urlsplit

import oras.defaults

from enginefab.core.errors import RegistryError
from enginefab.transport import auth
from enginefab.transport.http import (Body, Broken, Http, NoAnswer, Progress, Reply, ShortBody, Stalled, Stream,
                                      TlsFailure, TooLarge, TransportError, Unreachable)
from enginefab.transport.landing import landing
from enginefab.transport.options import DEFAULT, HttpOptions
from enginefab.transport.reference import Reference

MANIFEST_TYPES = list(oras.defaults.default_manifest_accepted_media_types)
CREDENTIALS_FIX = "check ENGINEFAB_REGISTRY_USER / ENGINEFAB_REGISTRY_PASSWORD or your docker config"


class NotFound(RegistryError):
    """The registry has no such manifest or blob (HTTP 404)."""


class TransportFailed(RegistryError):
    """The registry gave no usable answer; `failure` is the typed transport failure."""

    def __init__(self, failure: TransportError, fix: str | None) -> None:
        super().__init__(failure.message, fix=fix)
        self.failure = failure


def short(digest: str) -> str:
    return digest[:19] + "…" if len(digest) > 19 else digest


class RegistryClient:
    """One registry host. Safe to share between upload threads: after `ping`, only the token
    cache changes (under a lock). Setting `cancel` stops the requests in flight."""

    def __init__(self, host: str, *, plain_http: bool = False, ca_cert: str | None = None,
                 credentials: tuple[str, str] | None = None, options: HttpOptions = DEFAULT,
                 env: Mapping[str, str] | None = None) -> None:
        auth.refuse_userinfo(host)
        self.host = host
        self.plain_http = plain_http
        self.http = Http(options, verify=ca_cert or True)
        self.credentials = credentials if credentials is not None else auth.credentials_for(
            host, os.environ if env is None else env)
        self.scheme: str | None = None  # "none" | "basic" | "bearer", learned by ping()
        self.cancel = self.http.cancel
        self._challenge: auth.Challenge | None = None
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}  # scopes → (token, expiry)
        self._push_repos: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def for_reference(cls, ref: Reference, **kw) -> "RegistryClient":
        """A client for `ref`'s registry: plain HTTP on loopback unless told otherwise."""
        kw.setdefault("plain_http", ref.registry.startswith(("127.", "localhost", "[::1]")))
        return cls(ref.registry, **kw)

    @property
    def session(self):
        return self.http.session

    def url(self, path: str) -> str:
        return f"{'http' if self.plain_http else 'https'}://{self.host}{path}"

    # -- transport ------------------------------------------------------------------------
    def _failed(self, e: TransportError) -> TransportFailed:
        if isinstance(e, TlsFailure):
            fix = ("it is not a TLS server: pass --plain-http (only on a network you trust)" if e.plain_http else
                   "pass --ca-cert with the registry's CA certificate" if e.verification else
                   "check the registry's TLS configuration")
        elif isinstance(e, Unreachable):
            fix = "check that the registry is running and the address is right"
        elif isinstance(e, (NoAnswer, Stalled)):
            fix = (f"the registry at {self.host} is stuck or overloaded: check its process, disk and load, "
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

    def _send(self, method: str, url: str, what: str, *, headers: Mapping[str, str] | None = None,
              data=None, replayable: bool = True) -> Reply:
        """A request with authentication; a bearer 401 is answered once with a fresh token."""
        if not url.endswith("/v2/"):
            self.ping()
        h, scopes = self._authorization(url, method)
        h.update(headers or {})
        r = self._exchange(method, url, what, h, data)
        if r.status == 401 and self.scheme == "bearer":
            if not replayable:
                raise RegistryError(f"{self.host} asked for authentication in the middle of uploading {what}",
                                    fix="check the credentials and the repository's permissions")
            h["Authorization"] = f"Bearer {self._token(self._wanted(r, scopes), refresh=True)}"
            r = self._exchange(method, url, what, h, data)
        return r

    def _exchange(self, method: str, url: str, what: str, headers: dict, data) -> Reply:
        try:
            return self.http.send(method, url, what=what, headers=headers, data=data)
        except TransportError as e:
            raise self._failed(e) from None

    @contextlib.contextmanager
    def _stream(self, url: str, what: str) -> Iterator[Stream]:
        """GET with a streamed body (as stored: no content decoding), authenticated like `_send`."""
        self.ping()
        h, scopes = self._authorization(url, "GET")
        h["Accept-Encoding"] = "identity"
        try:
            if self.scheme == "bearer":
                with self.http.stream("GET", url, what=what, headers=h) as s:
                    if s.status != 401:
                        yield s
                        return
                    wanted = self._wanted(s, scopes)
                h["Authorization"] = f"Bearer {self._token(wanted, refresh=True)}"
            with self.http.stream("GET", url, what=what, headers=h) as s:
                yield s
        except TransportError as e:
            raise self._failed(e) from None

    # -- authentication -------------------------------------------------------------------
    def ping(self) -> str:
        """Learn the registry's auth scheme from /v2/ (so that credentials go out up front)."""
        if self.scheme is not None:
            return self.scheme
        r = self._exchange("GET", self.url("/v2/"), f"the API root of {self.host}", {}, None)
        if r.status == 200:
            self.scheme = "none"
        elif r.status == 401:
            ch = auth.parse_challenge(r.header("WWW-Authenticate"))
            if ch.scheme == "basic":
                if not self.credentials:
                    raise RegistryError(f"{self.host} requires a username and password",
                                        fix="set ENGINEFAB_REGISTRY_USER and ENGINEFAB_REGISTRY_PASSWORD, or docker login")
                self.scheme = "basic"
            elif ch.scheme == "bearer":
                if not ch.realm:
                    raise RegistryError(f"{self.host} asks for a bearer token but names no token service")
                self._challenge = ch
                self.scheme = "bearer"
            else:
                raise RegistryError(f"{self.host} asks for an unknown authentication scheme {ch.scheme[:30]!r}")
        elif r.status >= 500:
            raise self._error(r, f"the API root {self.host}/v2/")
        else:
            raise RegistryError(f"{self.host}/v2/ answered HTTP {r.status}: not an OCI registry?",
                                fix="check the address (host and port of the registry's API)")
        return self.scheme

    def _authorization(self, url: str, method: str) -> tuple[dict[str, str], tuple[str, ...]]:
        if self.scheme == "basic" and self.credentials:
            return {"Authorization": auth.basic(self.credentials)}, ()
        if self.scheme == "bearer":
            scopes = self._scopes(url, method)
            if scopes:
                return {"Authorization": f"Bearer {self._token(scopes)}"}, scopes
        return {}, ()

    def _wanted(self, r: Reply | Stream, scopes: tuple[str, ...]) -> tuple[str, ...]:
        """The scopes a 401 asks for, with the ones we had."""
        asked = auth.parse_challenge(r.headers.get("WWW-Authenticate", "")).scope
        return tuple(sorted(set(scopes) | set(asked.split())))

    def _scopes(self, url: str, method: str) -> tuple[str, ...]:
        """The token scopes a request needs (docker token spec): the repository it names, pull or
        pull+push, plus pull on the source repository of a cross-repository mount."""
        u = urlsplit(url)
        if u.path.rstrip("/") == "/v2/_catalog":
            return ("registry:catalog:*",)
        m = re.match(r"^/v2/(.+?)/(blobs|manifests|tags|referrers)(/|$)", u.path)
        if not m:
            return ()
        repo = m.group(1)
        push = method not in ("GET", "HEAD") or repo in self._push_repos
        scopes = {f"repository:{repo}:{'pull,push' if push else 'pull'}"}
        for src in parse_qs(u.query).get("from", []):
            scopes.add(f"repository:{src}:pull")
        return tuple(sorted(scopes))

    def _token(self, scopes: tuple[str, ...], refresh: bool = False) -> str:
        """A bearer token for these scopes from the registry's token service (cached until it
        is about to expire); basic credentials go to the token service, never to the registry."""
        with self._lock:
            got = self._tokens.get(scopes)
            if got and not refresh and got[1] > time.monotonic() + 10:
                return got[0]
        ch = self._challenge
        assert ch is not None
        params = ([("service", ch.service)] if ch.service else []) + [("scope", sc) for sc in scopes]
        headers = {"Accept": "application/json"}
        if self.credentials:
            headers["Authorization"] = auth.basic(self.credentials)
        try:
            r = self.http.send("GET", ch.realm, what=f"a token for {self.host}", params=params, headers=headers)
        except TransportError as e:
            raise TransportFailed(e, f"the token service of {self.host} is {ch.realm}: check that it runs") from None
        if r.status in (401, 403):
            who = f" for user {self.credentials[0]!r}" if self.credentials else " (no credentials given)"
            raise RegistryError(f"{self.host}'s token service rejected the credentials{who}", fix=CREDENTIALS_FIX)
        try:
            body = json.loads(r.content)
            token = body.get("token") or body.get("access_token")
            lifetime = float(body.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            token, lifetime = None, 60.0
        if r.status != 200 or not isinstance(token, str) or not token:
            raise RegistryError(f"{self.host}'s token service answered HTTP {r.status} without a token")
        with self._lock:
            self._tokens[scopes] = (token, time.monotonic() + lifetime)
        return token

    def check_login(self) -> None:
        """Fail fast and clearly when the credentials are wrong."""
        scheme = self.ping()
        if scheme == "basic":
            r = self._send("GET", self.url("/v2/"), f"the API root of {self.host}")
            if r.status == 401:
                user = self.credentials[0] if self.credentials else "?"
                raise RegistryError(f"{self.host} rejected the password for user {user!r}", fix=CREDENTIALS_FIX)
        elif scheme == "bearer" and self.credentials:
            self._token((), refresh=True)  # the token service checks the password (docker login does this)

    def prepare(self, repository: str, push: bool = False) -> None:
        """Authenticate for a repository before any body is sent (bearer: fetch the token now)."""
        if self.ping() != "bearer":
            return
        if push:
            with self._lock:
                self._push_repos.add(repository)
        self._token((f"repository:{repository}:{'pull,push' if push else 'pull'}",))

    # -- reading --------------------------------------------------------------------------
    def _error(self, r: Reply | Stream, what: str) -> RegistryError:
        """What the registry answered, in words (its error codes when it sent them)."""
        detail = ""
        try:
            raw = r.content if isinstance(r, Reply) else r.read(64 << 10)
            errs = json.loads(raw).get("errors", [])
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errs if isinstance(e, dict))[:300]
        except (ValueError, AttributeError, TypeError, TransportError):
            pass
        said = f" ({detail})" if detail else ""
        if r.status == 401:
            return RegistryError(f"{what}: {self.host} refused the credentials{said or ' (HTTP 401)'}", fix=CREDENTIALS_FIX)
        if r.status == 403:
            return RegistryError(f"{what}: {self.host} denied it (HTTP 403){said}",
                                 fix="check the account's permissions on the repository")
        if r.status == 404:
            return NotFound(f"{what}: not found on {self.host}{said or ' (HTTP 404)'}")
        if r.status >= 500:
            return RegistryError(f"{what}: HTTP {r.status} from {self.host}{said}",
                                 fix="the registry failed on its side: see its log, then try again")
        return RegistryError(f"{what}: {self.host} answered HTTP {r.status}{said}")

    def get_manifest_raw(self, repository: str, ref: str) -> tuple[bytes, str]:
        """(exact bytes, media type); verified when `ref` is a digest."""
        self.prepare(repository)
        what = f"manifest {repository}:{ref}" if not ref.startswith("sha256:") else f"manifest {repository}@{short(ref)}"
        r = self._send("GET", self.url(f"/v2/{repository}/manifests/{ref}"), what,
                       headers={"Accept": ", ".join(MANIFEST_TYPES)})
        if r.status != 200:
            raise self._error(r, what)
        if ref.startswith("sha256:") and "sha256:" + hashlib.sha256(r.content).hexdigest() != ref:
            raise RegistryError(f"{self.host} served a manifest for {ref} whose bytes hash to something else",
                                fix="the registry or a proxy is corrupt or hostile")
        return r.content, r.header("Content-Type").split(";")[0]

    get_manifest = get_manifest_raw

    def head_manifest(self, repository: str, ref: str) -> tuple[str, int, str] | None:
        self.prepare(repository)
        what = f"manifest {repository}:{ref}"
        r = self._send("HEAD", self.url(f"/v2/{repository}/manifests/{ref}"), what,
                       headers={"Accept": ", ".join(MANIFEST_TYPES)})
        if r.status == 404:
            return None
        if r.status != 200:
            raise self._error(r, what)
        try:
            size = int(r.header("Content-Length") or 0)
        except ValueError:
            size = 0
        return r.header("Docker-Content-Digest"), size, r.header("Content-Type").split(";")[0]

    def has_blob(self, repository: str, digest: str) -> bool:
        self.prepare(repository)
        what = f"blob {short(digest)} of {repository}"
        r = self._send("HEAD", self.url(f"/v2/{repository}/blobs/{digest}"), what)
        if r.status in (200, 404):
            return r.status == 200
        raise self._error(r, what)

    def catalog(self, limit: int = 100) -> list[str]:
        """Repositories of the registry, if it lets us list them (many do not: then [])."""
        self.ping()
        r = self._send("GET", self.url(f"/v2/_catalog?n={limit}"), f"the catalog of {self.host}")
        try:
            repos = json.loads(r.content).get("repositories") if r.status == 200 else []
        except (ValueError, AttributeError):
            return []
        return [x for x in repos or [] if isinstance(x, str)]

    def stream_blob(self, repository: str, digest: str, progress: Progress | None = None,
                    size: int | None = None) -> Iterator[bytes]:
        """The blob's bytes in chunks, never more than `size` (its descriptor's); raises
        RegistryError if they do not hash to `digest` or are fewer than `size`."""
        self.prepare(repository)
        what = f"blob {short(digest)} of {repository}"
        limit = size if size is not None else self.http.options.max_download
        h = hashlib.sha256()
        n = 0
        with self._stream(self.url(f"/v2/{repository}/blobs/{digest}"), what) as s:
            if s.status != 200:
                raise self._error(s, what)
            for chunk in s.chunks(limit=limit, progress=progress):
                h.update(chunk)
                n += len(chunk)
                yield chunk
        if size is not None and n != size:
            raise RegistryError(f"blob {digest} from {self.host}/{repository} ended after {n} of its {size} bytes",
                                fix="run the command again; if it persists the registry's copy is damaged")
        if "sha256:" + h.hexdigest() != digest:
            raise RegistryError(f"blob {digest} from {self.host}/{repository} has sha256:{h.hexdigest()}: refused",
                                fix="the registry's copy is corrupt or was tampered with")

    def get_blob_bytes(self, repository: str, digest: str, size: int | None = None) -> bytes:
        """A small blob (a config) in memory: at most `size`, else max_document."""
        return b"".join(self.stream_blob(repository, digest, size=self.http.options.max_document
                                         if size is None else size))

    def download_blob_to(self, repository: str, digest: str, dest: Path, progress: Progress | None = None,
                         size: int | None = None) -> Path:
        """Verified download; the file appears at `dest` only if digest (and size) matched. A
        connection that broke is tried again (options.retries); a stall or a lie is not."""
        attempt = 0
        while True:
            try:
                with landing(dest.parent) as out:
                    for chunk in self.stream_blob(repository, digest, progress, size):
                        out.file.write(chunk)
                    return out.commit(dest)
            except TransportFailed as e:
                attempt += 1
                if not isinstance(e.failure, Broken) or attempt > self.http.options.retries:
                    raise

    # -- writing --------------------------------------------------------------------------
    def _location(self, r: Reply) -> str:
        loc = r.header("Location")
        if not loc:
            raise RegistryError(f"{self.host} started an upload without a Location header")
        return loc if loc.startswith(("http://", "https://")) else self.url(loc)

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool | str:
        """True if mounted; else the upload URL the registry opened instead."""
        self.prepare(repository, push=True)
        what = f"the mount of blob {short(digest)} into {repository}"
        r = self._send("POST", self.url(f"/v2/{repository}/blobs/uploads/?mount={digest}&from={from_repository}"),
                       what, headers={"Content-Length": "0"})
        if r.status == 201:
            return True
        if r.status == 202:
            return self._location(r)
        raise self._error(r, what)

    def upload_blob_file(self, repository: str, digest: str, size: int, path: Path,
                         mount_from: str | None = None, progress: Progress | None = None,
                         head: bool = True) -> int:
        """Make `digest` present in `repository`; returns the bytes actually uploaded (0 if it was
        there already or could be mounted). Streams exactly `size` bytes of the file.
        `head=False`: the caller has just checked that the repository lacks it."""
        have = path.stat().st_size
        if have != size:
            raise RegistryError(f"blob {digest} is {have} bytes in {path.parent}, its descriptor says {size}: "
                                "not uploaded", fix="the store's copy is damaged: run `enginefab store verify`, "
                                "then build again")
        if head and self.has_blob(repository, digest):
            return 0
        upload_url: str | None = None
        if mount_from and mount_from != repository:
            got = self.mount_blob(repository, digest, mount_from)
            if got is True:
                return 0
            upload_url = got  # type: ignore[assignment]
        what = f"blob {short(digest)} to {repository}"
        with open(path, "rb") as f:
            body = Body(f, size, what=what, progress=progress)
            self._monolithic_upload(repository, upload_url or self._start_upload(repository, digest), digest, body,
                                    {"Content-Length": str(size)}, replayable=False)
        return size

    def _start_upload(self, repository: str, digest: str) -> str:
        """Open an upload session; returns its URL."""
        self.prepare(repository, push=True)
        what = f"the upload of blob {short(digest)} to {repository}"
        r = self._send("POST", self.url(f"/v2/{repository}/blobs/uploads/"), what, headers={"Content-Length": "0"})
        if r.status != 202:
            raise self._error(r, what)
        return self._location(r)

    def _monolithic_upload(self, repository: str, url: str, digest: str, body, headers: dict | None = None,
                           replayable: bool = True) -> None:
        """Send the whole blob in the closing PUT of an upload session."""
        sep = "&" if "?" in url else "?"
        what = f"blob {short(digest)} to {repository}"
        r = self._send("PUT", f"{url}{sep}digest={digest}", what, data=body, replayable=replayable,
                       headers={"Content-Type": "application/octet-stream", **(headers or {})})
        if r.status not in (201, 204):
            raise self._error(r, f"the upload of {what}")

    def put_manifest(self, repository: str, ref: str, raw: bytes, media_type: str) -> str:
        """PUT our exact bytes; returns the digest and checks the registry agrees on it."""
        return self.put_manifest_response(repository, ref, raw, media_type)[0]

    def put_manifest_response(self, repository: str, ref: str, raw: bytes, media_type: str) -> tuple[str, Reply]:
        """`put_manifest`, also returning the answer (its `OCI-Subject` header says whether the
        registry indexes referrers itself)."""
        self.prepare(repository, push=True)
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        what = f"manifest {repository}:{ref}"
        r = self._send("PUT", self.url(f"/v2/{repository}/manifests/{ref}"), what, data=raw,
                       headers={"Content-Type": media_type})
        if r.status not in (200, 201):
            raise self._error(r, what)
        said = r.header("Docker-Content-Digest")
        if said and said != digest:
            raise RegistryError(f"{self.host} stored {repository}:{ref} as {said}, not {digest}: it rewrote the manifest")
        return digest, r

    def upload_blob_bytes(self, repository: str, data: bytes) -> int:
        """Make a small in-memory blob present in `repository`; returns the bytes uploaded."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if self.has_blob(repository, digest):
            return 0
        self._monolithic_upload(repository, self._start_upload(repository, digest), digest, bytes(data))
        return len(data)

    # -- referrers ------------------------------------------------------------------------
    def referrers(self, repository: str, digest: str) -> tuple[list[dict], str]:
        """Descriptors whose subject is `digest`: from the referrers API, else the fallback tag."""
        self.prepare(repository)
        r = self._send("GET", self.url(f"/v2/{repository}/referrers/{digest}"), f"the referrers of {short(digest)}",
                       headers={"Accept": "application/vnd.oci.image.index.v1+json"})
        if r.status == 200 and r.header("Content-Type").startswith("application/vnd.oci.image.index"):
            return list(json.loads(r.content).get("manifests", [])), "api"
        try:
            raw, _ = self.get_manifest_raw(repository, fallback_tag(digest))
        except NotFound:
            return [], "fallback"
        return list(json.loads(raw).get("manifests", [])), "fallback"


def fallback_tag(digest: str) -> str:
    """The referrers tag schema of the distribution spec: sha256:<hex> → sha256-<hex>."""
    algo, _, hexd = digest.partition(":")
    return f"{algo}-{hexd}"[:128]
