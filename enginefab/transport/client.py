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
from pathlib import Path
from types import MappingProxyType
from typing import Iterator, Mapping

import oras.defaults

from enginefab.core.errors import RegistryError
from enginefab.transport import auth
from enginefab.transport.errors import Broken, Mismatch, NotFound, TransportError, TransportFailed, registry_failure
from enginefab.transport.http import Body, Http, Progress, Reply, Stream
from enginefab.transport.landing import landing
from enginefab.transport.options import DEFAULT, HttpOptions
from enginefab.transport.reference import Reference

MANIFEST_TYPES = list(oras.defaults.default_manifest_accepted_media_types)


def short(digest: str) -> str:
    return digest[:19] + "…" if len(digest) > 19 else digest


class RegistryClient:
    """One registry host. Safe to share between upload threads: after `ping`, only the token
    cache changes (under a lock). Setting `cancel` stops the requests in flight."""

    def __init__(self, host: str, *, plain_http: bool = False, ca_cert: str | None = None,
                 credentials: tuple[str, str] | None = None, options: HttpOptions = DEFAULT,
                 env: Mapping[str, str] = MappingProxyType({})) -> None:
        """`credentials`, else those `env` leads to (auth.credentials_for: ENGINEFAB_REGISTRY_USER
        and _PASSWORD, the docker config); the edge passes the settings' environment."""
        auth.refuse_userinfo(host)
        self.host = host
        self.plain_http = plain_http
        self.http = Http(options, verify=ca_cert or True)
        self.credentials = credentials if credentials is not None else auth.credentials_for(host, env)
        self.auth = auth.Authenticator(host, self.credentials, self.http)
        self.cancel = self.http.cancel

    @classmethod
    def for_reference(cls, ref: Reference, **kw) -> "RegistryClient":
        """A client for `ref`'s registry: plain HTTP on loopback unless told otherwise."""
        kw.setdefault("plain_http", ref.registry.startswith(("127.", "localhost", "[::1]")))
        return cls(ref.registry, **kw)

    def url(self, path: str) -> str:
        return f"{'http' if self.plain_http else 'https'}://{self.host}{path}"

    # -- transport ------------------------------------------------------------------------
    def _failed(self, e: TransportError) -> TransportFailed:
        return registry_failure(e, self.host)

    def _send(self, method: str, url: str, what: str, *, headers: Mapping[str, str] | None = None,
              data=None, replayable: bool = True) -> Reply:
        """A request with authentication; a bearer 401 is answered once with a fresh token."""
        if not url.endswith("/v2/"):
            self.ping()
        h, scopes = self.auth.headers(url, method)
        h.update(headers or {})
        r = self._exchange(method, url, what, h, data)
        if r.status == 401 and self.scheme == "bearer":
            if not replayable:
                raise RegistryError(f"{self.host} asked for authentication in the middle of uploading {what}",
                                    fix="check the credentials and the repository's permissions")
            h.update(self.auth.renewed(r.header("WWW-Authenticate"), scopes))
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
        h, scopes = self.auth.headers(url, "GET")
        h["Accept-Encoding"] = "identity"
        try:
            if self.scheme == "bearer":
                with self.http.stream("GET", url, what=what, headers=h) as s:
                    if s.status != 401:
                        yield s
                        return
                    challenge = s.headers.get("WWW-Authenticate", "")
                h.update(self.auth.renewed(challenge, scopes))
            with self.http.stream("GET", url, what=what, headers=h) as s:
                yield s
        except TransportError as e:
            raise self._failed(e) from None

    # -- authentication -------------------------------------------------------------------
    @property
    def scheme(self) -> str | None:
        return self.auth.scheme

    @scheme.setter
    def scheme(self, value: str | None) -> None:
        self.auth.scheme = value

    def ping(self) -> str:
        """Learn the registry's auth scheme from /v2/ (so that credentials go out up front)."""
        if self.auth.scheme is not None:
            return self.auth.scheme
        r = self._exchange("GET", self.url("/v2/"), f"the API root of {self.host}", {}, None)
        if r.status in (200, 401):
            return self.auth.learn(r.status, r.header("WWW-Authenticate"))
        if r.status >= 500:
            raise self._error(r, f"the API root {self.host}/v2/")
        raise RegistryError(f"{self.host}/v2/ answered HTTP {r.status}: not an OCI registry?",
                            fix="check the address (host and port of the registry's API)")

    def check_login(self) -> None:
        """Fail fast and clearly when the credentials are wrong."""
        scheme = self.ping()
        if scheme == "basic":
            r = self._send("GET", self.url("/v2/"), f"the API root of {self.host}")
            if r.status == 401:
                user = self.credentials[0] if self.credentials else "?"
                raise RegistryError(f"{self.host} rejected the password for user {user!r}", fix=auth.CREDENTIALS_FIX)
        elif scheme == "bearer" and self.credentials:
            self.auth.token((), refresh=True)  # the token service checks the password (docker login does this)

    def prepare(self, repository: str, push: bool = False) -> None:
        """Authenticate for a repository before any body is sent (bearer: fetch the token now)."""
        self.ping()
        self.auth.for_repository(repository, push)

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
            return RegistryError(f"{what}: {self.host} refused the credentials{said or ' (HTTP 401)'}", fix=auth.CREDENTIALS_FIX)
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
                    size: int | None = None, limit: int | None = None) -> Iterator[bytes]:
        """The blob's bytes in chunks, never more than `size` (its descriptor's, when known) or
        else `limit` (default max_download); raises RegistryError if they do not hash to
        `digest` or are fewer than `size`."""
        self.prepare(repository)
        what = f"blob {short(digest)} of {repository}"
        if size is not None:
            limit = size
        elif limit is None:
            limit = self.http.options.max_download
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
            raise Mismatch(f"blob {digest} from {self.host}/{repository} ended after {n} of its {size} bytes",
                                fix="run the command again; if it persists the registry's copy is damaged")
        if "sha256:" + h.hexdigest() != digest:
            raise Mismatch(f"blob {digest} from {self.host}/{repository} has sha256:{h.hexdigest()}: refused",
                                fix="the registry's copy is corrupt or was tampered with")

    def get_blob_bytes(self, repository: str, digest: str, size: int | None = None) -> bytes:
        """A small blob (a config) in memory: at most `size`, else max_document."""
        return b"".join(self.stream_blob(repository, digest, size=size, limit=self.http.options.max_document))

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
