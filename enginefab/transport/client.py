"""The registry client: the `oras` SDK's Registry, with the gaps we measured in oras 0.2.x fixed.

Each fix overrides one oras method; tests/test_registry_client.py shows plain oras failing where
ours does not (the referrers and the mount are exercised in tests/test_push.py):

=====================================  ======================================================
oras 0.2.43                            RegistryClient
=====================================  ======================================================
no request timeouts                    every request has (connect, read) timeouts
retries sleep 2+3^n s, 5 times, on     at most 3 attempts, ≤ 2 s apart, only on connection
any error (minutes on a hard failure)  errors and 5xx; 4xx and auth failures fail at once
basic auth only after a 401 (a large   the auth scheme is learned from /v2/ first; basic
upload's body is sent twice, fails     credentials then go on every request; bearer tokens are
over TLS); one token at a time         fetched per scope set (with pull on a mount's source)
                                       before a body is sent, and renewed before they expire
`login` reports success for a wrong    `check_login` fails in seconds with a clear message and
password, writes ~/.docker/config.json writes nothing
`upload_manifest` re-serializes the    `put_manifest` sends our exact bytes with their media
JSON, validates image manifests only   type and checks Docker-Content-Digest
`put_upload` reads the blob into       `upload_blob` streams from the file, mounts from another
memory; no cross-repository mount      repository when possible (`mount=…&from=…`)
downloads are not digest-verified      every download is hashed while streaming and refused on
                                       mismatch, before it lands anywhere
no referrers API, no fallback          `referrers` uses the API or the `sha256-<hex>` tag
=====================================  ======================================================
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import oras.provider
import requests
import requests.adapters
from oras.auth.utils import parse_auth_header

from enginefab.core import canonical
from enginefab.core.errors import RegistryError
from enginefab.transport.reference import Reference

MANIFEST_TYPES = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
]
TIMEOUT = (5, 120)
ATTEMPTS = 3
CHUNK = 1 << 20


class _Retry(Exception):
    pass


def credentials_for(host: str) -> tuple[str, str] | None:
    """Credentials from the environment, else the docker config (read, never written): its
    `credHelpers` / `credsStore` helper (`docker-credential-<name> get`), else its `auths`."""
    user = os.environ.get("ENGINEFAB_REGISTRY_USER")
    pw = os.environ.get("ENGINEFAB_REGISTRY_PASSWORD")
    if user and pw is not None:
        return user, pw
    cfg_dir = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    try:
        cfg = json.loads((Path(cfg_dir) / "config.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    helper = (cfg.get("credHelpers") or {}).get(host) or cfg.get("credsStore")
    if helper:
        got = _from_helper(helper, host)
        if got:
            return got
    entry = cfg.get("auths", {}).get(host) or cfg.get("auths", {}).get(f"https://{host}")
    if entry and entry.get("auth"):
        u, _, p = base64.b64decode(entry["auth"]).decode().partition(":")
        return u, p
    return None


def _from_helper(helper: str, host: str) -> tuple[str, str] | None:
    """The docker credential-helper protocol: the host on stdin, {Username, Secret} on stdout."""
    import subprocess

    try:
        p = subprocess.run([f"docker-credential-{helper}", "get"], input=host.encode(), capture_output=True,
                           timeout=30)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    if p.returncode != 0:
        return None  # "credentials not found" and the like: fall back to `auths`
    try:
        d = json.loads(p.stdout)
        return str(d["Username"]), str(d["Secret"])
    except (ValueError, KeyError, TypeError):
        return None


class RegistryClient(oras.provider.Registry):
    """One registry host. Safe to share between upload threads: the only state changed after
    `ping` is the bearer-token cache, under a lock."""

    def __init__(
        self,
        host: str,
        *,
        plain_http: bool = False,
        ca_cert: str | None = None,
        credentials: tuple[str, str] | None = None,
        timeout: float | tuple[float, float] = TIMEOUT,
    ) -> None:
        super().__init__(hostname=host, insecure=plain_http, tls_verify=ca_cert or True, auth_backend="token")
        self.host = host
        self.timeout = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        self.credentials = credentials if credentials is not None else credentials_for(host)
        # bigger send blocks than urllib3's 16 KiB for streamed layer uploads; a pool per parallel upload
        adapter = _Adapter(pool_maxsize=16)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.scheme: str | None = None  # "none" | "basic" | "bearer", learned by ping()
        self._challenge = None  # bearer: realm and service of the token service
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}  # scopes → (token, expiry)
        self._push_repos: set[str] = set()
        self._lock = threading.Lock()
        if self.credentials:
            self.auth.set_basic_auth(*self.credentials)

    @classmethod
    def for_reference(cls, ref: Reference, **kw) -> "RegistryClient":
        host = ref.registry
        plain = host.startswith(("127.0.0.1", "localhost")) and os.environ.get("ENGINEFAB_REGISTRY_TLS") != "1"
        kw.setdefault("plain_http", plain)
        return cls(host, **kw)

    # -- transport ------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return f"{self.prefix}://{self.host}{path}"

    def _send(self, method: str, url: str, **kw) -> requests.Response:
        kw.setdefault("timeout", self.timeout)
        kw.setdefault("verify", self._tls_verify)
        try:
            return self.session.request(method, url, **kw)
        except requests.exceptions.SSLError as e:
            raise RegistryError(f"TLS verification of {self.host} failed: {e}",
                                fix="pass --ca-cert with the registry's CA certificate") from None
        except (requests.ConnectionError, requests.Timeout) as e:
            raise _Retry(str(e)) from e

    def do_request(self, url: str, method: str = "GET", data=None, headers: dict | None = None,
                   json=None, stream: bool = False) -> requests.Response:  # type: ignore[override]
        """oras's request path, with timeouts, bounded retries and up-front authentication."""
        last = ""
        replayable = data is None or isinstance(data, (bytes, bytearray, str))
        if self.scheme is None and not url.endswith("/v2/"):
            self.ping()
        for attempt in range(ATTEMPTS):
            h = dict(self.headers)
            h.update(headers or {})
            scopes = self._scopes(url, method) if self.scheme == "bearer" else ()
            if self.scheme == "basic" and self.auth._basic_auth:
                h["Authorization"] = f"Basic {self.auth._basic_auth}"
            elif scopes:
                h["Authorization"] = f"Bearer {self._token(scopes)}"
            try:
                r = self._send(method, url, data=data, json=json, headers=h, stream=stream)
                if r.status_code == 401 and self.scheme == "bearer":
                    if not replayable:
                        raise RegistryError(f"{self.host} asked for authentication in the middle of an upload",
                                            fix="check the credentials and the repository's permissions")
                    wanted = parse_auth_header(r.headers.get("Www-Authenticate", "")).scope
                    more = tuple(sorted(set(scopes) | set((wanted or "").split())))
                    h["Authorization"] = f"Bearer {self._token(more, refresh=True)}"
                    r = self._send(method, url, data=data, json=json, headers=h, stream=stream)
                if r.status_code >= 500:
                    last = f"HTTP {r.status_code}"
                    if not replayable:
                        return r
                    raise _Retry(last)
                return r
            except _Retry as e:
                last = str(e)
                if not replayable or attempt == ATTEMPTS - 1:
                    break
                time.sleep(min(0.5 * 2**attempt, 2))
        raise RegistryError(f"cannot reach {self.host}: {last}",
                            fix="check that the registry is running and the address is right")

    # -- authentication -------------------------------------------------------------------
    def ping(self) -> str:
        """Learn the registry's auth scheme from /v2/ (and authenticate up front)."""
        if self.scheme is not None:
            return self.scheme
        try:
            r = self._send("GET", self.url("/v2/"))
        except _Retry as e:
            raise RegistryError(f"cannot reach {self.host}: {e}",
                                fix="check that the registry is running and the address is right") from None
        if r.status_code == 200:
            self.scheme = "none"
        elif r.status_code == 401:
            challenge = r.headers.get("Www-Authenticate", "")
            if challenge.lower().startswith("basic"):
                if not self.credentials:
                    raise RegistryError(f"{self.host} requires a username and password",
                                        fix="set ENGINEFAB_REGISTRY_USER and ENGINEFAB_REGISTRY_PASSWORD, or docker login")
                self.scheme = "basic"
            elif challenge.lower().startswith("bearer"):
                self._challenge = parse_auth_header(challenge)
                if not self._challenge.realm:
                    raise RegistryError(f"{self.host} asks for a bearer token but names no token service")
                self.scheme = "bearer"
            else:
                raise RegistryError(f"{self.host} asks for an unknown authentication scheme: {challenge[:60]!r}")
        else:
            raise RegistryError(f"{self.host}/v2/ answered HTTP {r.status_code}: not an OCI registry?")
        return self.scheme

    def _scopes(self, url: str, method: str) -> tuple[str, ...]:
        """The token scopes a request needs (docker token spec): the repository it names, pull or
        pull+push, plus pull on the source repository of a cross-repository mount."""
        from urllib.parse import parse_qs, urlsplit

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
        params: list[tuple[str, str]] = [("service", ch.service)] if ch.service else []
        params += [("scope", sc) for sc in scopes]
        headers = {"Accept": "application/json"}
        if self.auth._basic_auth:
            headers["Authorization"] = f"Basic {self.auth._basic_auth}"
        try:
            r = self._send("GET", ch.realm, params=params, headers=headers)
        except _Retry as e:
            raise RegistryError(f"cannot reach the token service of {self.host} ({ch.realm}): {e}") from None
        if r.status_code in (401, 403):
            who = f" for user {self.credentials[0]!r}" if self.credentials else " (no credentials given)"
            raise RegistryError(f"{self.host}'s token service rejected the credentials{who}",
                                fix="check ENGINEFAB_REGISTRY_USER / ENGINEFAB_REGISTRY_PASSWORD or your docker config")
        try:
            body = r.json()
            token = body.get("token") or body.get("access_token")
        except ValueError:
            token, body = None, {}
        if r.status_code != 200 or not token:
            raise RegistryError(f"{self.host}'s token service answered HTTP {r.status_code} without a token")
        expires = time.monotonic() + float(body.get("expires_in") or 60)
        with self._lock:
            self._tokens[scopes] = (token, expires)
        return token

    def check_login(self) -> None:
        """Fail fast and clearly when the credentials are wrong (oras `login` does not)."""
        scheme = self.ping()
        if scheme == "none":
            return
        if scheme == "basic":
            r = self._send("GET", self.url("/v2/"), headers={"Authorization": f"Basic {self.auth._basic_auth}"})
            if r.status_code == 401:
                user = self.credentials[0] if self.credentials else "?"
                raise RegistryError(f"{self.host} rejected the password for user {user!r}",
                                    fix="check ENGINEFAB_REGISTRY_USER / ENGINEFAB_REGISTRY_PASSWORD or your docker config")
            return
        if self.credentials:
            self._token((), refresh=True)  # the token service checks the password (docker login does this)

    def login(self, *a, **kw):  # type: ignore[override]
        """Verify credentials; never writes a docker config."""
        self.check_login()
        return {"Status": "Login Succeeded"}

    def prepare(self, repository: str, push: bool = False) -> None:
        """Authenticate for a repository before any body is sent (bearer: fetch the token now)."""
        if self.ping() != "bearer":
            return
        if push:
            with self._lock:
                self._push_repos.add(repository)
        self._token((f"repository:{repository}:{'pull,push' if push else 'pull'}",))

    # -- reading --------------------------------------------------------------------------
    def _error(self, r: requests.Response, what: str) -> RegistryError:
        detail = ""
        try:
            errs = r.json().get("errors", [])
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errs if isinstance(e, dict))
        except ValueError:
            pass
        if r.status_code == 401:
            return RegistryError(f"{what}: {self.host} refused the credentials ({detail or 'HTTP 401'})",
                                 fix="check ENGINEFAB_REGISTRY_USER / ENGINEFAB_REGISTRY_PASSWORD")
        if r.status_code == 404:
            return RegistryError(f"{what}: not found on {self.host} ({detail or 'HTTP 404'})")
        return RegistryError(f"{what}: {self.host} answered HTTP {r.status_code} {detail}")

    def get_manifest_raw(self, repository: str, ref: str) -> tuple[bytes, str]:
        """(exact bytes, media type); verified when `ref` is a digest."""
        self.prepare(repository)
        r = self.do_request(self.url(f"/v2/{repository}/manifests/{ref}"), "GET",
                            headers={"Accept": ", ".join(MANIFEST_TYPES)})
        if r.status_code != 200:
            raise self._error(r, f"manifest {repository}:{ref}")
        raw = r.content
        if ref.startswith("sha256:") and "sha256:" + hashlib.sha256(raw).hexdigest() != ref:
            raise RegistryError(f"{self.host} served a manifest for {ref} whose bytes hash to something else",
                                fix="the registry or a proxy is corrupt or hostile")
        return raw, r.headers.get("Content-Type", "").split(";")[0]

    def get_manifest(self, repository, ref=None, *a, **kw):  # type: ignore[override]
        """Two call styles: ours (repository, ref) → (bytes, type); oras's (container) → dict."""
        if ref is None or not isinstance(ref, str):
            container = self.get_container(repository)
            raw, _ = self.get_manifest_raw(container.api_prefix, container.digest or container.tag)
            return json.loads(raw)
        return self.get_manifest_raw(repository, ref)

    def head_manifest(self, repository: str, ref: str) -> tuple[str, int, str] | None:
        self.prepare(repository)
        r = self.do_request(self.url(f"/v2/{repository}/manifests/{ref}"), "HEAD",
                            headers={"Accept": ", ".join(MANIFEST_TYPES)})
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise self._error(r, f"manifest {repository}:{ref}")
        return (r.headers.get("Docker-Content-Digest", ""), int(r.headers.get("Content-Length") or 0),
                r.headers.get("Content-Type", "").split(";")[0])

    def has_blob(self, repository: str, digest: str) -> bool:
        self.prepare(repository)
        r = self.do_request(self.url(f"/v2/{repository}/blobs/{digest}"), "HEAD")
        if r.status_code == 200:
            return True
        if r.status_code == 404:
            return False
        raise self._error(r, f"blob {digest}")

    def catalog(self, limit: int = 100) -> list[str]:
        """Repositories of the registry, if it lets us list them (many do not: then [])."""
        self.ping()
        r = self.do_request(self.url(f"/v2/_catalog?n={limit}"), "GET")
        if r.status_code != 200:
            return []
        try:
            return [x for x in r.json().get("repositories") or [] if isinstance(x, str)]
        except ValueError:
            return []

    def blob_exists(self, layer: dict, container) -> bool:  # type: ignore[override]
        return self.has_blob(container.api_prefix, layer["digest"])

    def stream_blob(self, repository: str, digest: str, progress: Callable[[int], None] | None = None) -> Iterator[bytes]:
        """The blob's bytes in chunks; raises RegistryError if they do not hash to `digest`."""
        self.prepare(repository)
        r = self.do_request(self.url(f"/v2/{repository}/blobs/{digest}"), "GET", stream=True)
        if r.status_code != 200:
            raise self._error(r, f"blob {digest}")
        h = hashlib.sha256()
        with r:
            try:
                for chunk in r.iter_content(CHUNK):
                    h.update(chunk)
                    if progress:
                        progress(len(chunk))
                    yield chunk
            except requests.RequestException as e:
                raise RegistryError(f"download of {digest} from {self.host} broke off: {e}") from None
        if "sha256:" + h.hexdigest() != digest:
            raise RegistryError(f"blob {digest} from {self.host}/{repository} has sha256:{h.hexdigest()}: refused",
                                fix="the registry's copy is corrupt or was tampered with")

    def get_blob_bytes(self, repository: str, digest: str) -> bytes:
        return b"".join(self.stream_blob(repository, digest))

    def download_blob_to(self, repository: str, digest: str, dest: Path,
                         progress: Callable[[int], None] | None = None) -> Path:
        """Verified download; the file appears at `dest` only if the digest matched."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        try:
            with open(tmp, "wb") as f:
                for chunk in self.stream_blob(repository, digest, progress):
                    f.write(chunk)
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                tmp.unlink()
        return dest

    def download_blob(self, container, digest: str, outfile: str) -> str:  # type: ignore[override]
        c = self.get_container(container)
        return str(self.download_blob_to(c.api_prefix, digest, Path(outfile)))

    # -- writing --------------------------------------------------------------------------
    def _location(self, r: requests.Response) -> str:
        loc = r.headers.get("Location", "")
        if not loc:
            raise RegistryError(f"{self.host} started an upload without a Location header")
        return loc if loc.startswith("http") else self.url(loc)

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool | str:
        """True if mounted; else the upload URL the registry opened instead."""
        self.prepare(repository, push=True)
        r = self.do_request(self.url(f"/v2/{repository}/blobs/uploads/?mount={digest}&from={from_repository}"), "POST",
                            headers={"Content-Length": "0"})
        if r.status_code == 201:
            return True
        if r.status_code == 202:
            return self._location(r)
        raise self._error(r, f"mount of {digest} into {repository}")

    def upload_blob_file(self, repository: str, digest: str, size: int, path: Path,
                         mount_from: str | None = None, progress: Callable[[int], None] | None = None,
                         head: bool = True) -> int:
        """Make `digest` present in `repository`; returns the bytes actually uploaded (0 if it was
        there already or could be mounted). Streams the file: memory does not grow with size.
        `head=False`: the caller has just checked that the repository lacks it."""
        if head and self.has_blob(repository, digest):
            return 0
        upload_url: str | None = None
        if mount_from and mount_from != repository:
            got = self.mount_blob(repository, digest, mount_from)
            if got is True:
                return 0
            upload_url = got  # type: ignore[assignment]
        with open(path, "rb") as f:
            self._monolithic_upload(upload_url or self._start_upload(repository, digest), digest,
                                    _Reader(f, size, progress), {"Content-Length": str(size)})
        return size

    def _start_upload(self, repository: str, digest: str) -> str:
        """Open an upload session; returns its URL."""
        self.prepare(repository, push=True)
        r = self.do_request(self.url(f"/v2/{repository}/blobs/uploads/"), "POST", headers={"Content-Length": "0"})
        if r.status_code != 202:
            raise self._error(r, f"upload of {digest}")
        return self._location(r)

    def _monolithic_upload(self, url: str, digest: str, body, headers: dict | None = None) -> None:
        """Send the whole blob in the closing PUT of an upload session."""
        sep = "&" if "?" in url else "?"
        r = self.do_request(f"{url}{sep}digest={digest}", "PUT", data=body,
                            headers={"Content-Type": "application/octet-stream", **(headers or {})})
        if r.status_code not in (201, 204):
            raise self._error(r, f"upload of {digest}")

    def upload_blob(self, blob: str, container, layer: dict, do_chunked: bool = False, chunk_size: int = 0):  # type: ignore[override]
        c = self.get_container(container)
        self.upload_blob_file(c.api_prefix, layer["digest"], layer["size"], Path(blob))
        resp = requests.Response()
        resp.status_code = 201
        return resp

    def put_manifest(self, repository: str, ref: str, raw: bytes, media_type: str) -> str:
        """PUT our exact bytes; returns the digest and checks the registry agrees on it."""
        return self.put_manifest_response(repository, ref, raw, media_type)[0]

    def put_manifest_response(self, repository: str, ref: str, raw: bytes,
                              media_type: str) -> tuple[str, requests.Response]:
        """`put_manifest`, also returning the response (its `OCI-Subject` header says whether the
        registry indexes referrers itself)."""
        self.prepare(repository, push=True)
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        r = self.do_request(self.url(f"/v2/{repository}/manifests/{ref}"), "PUT", data=raw,
                            headers={"Content-Type": media_type})
        if r.status_code not in (200, 201):
            raise self._error(r, f"manifest {repository}:{ref}")
        said = r.headers.get("Docker-Content-Digest")
        if said and said != digest:
            raise RegistryError(f"{self.host} stored {repository}:{ref} as {said}, not {digest}: it rewrote the manifest")
        return digest, r

    def upload_blob_bytes(self, repository: str, data: bytes) -> int:
        """Make a small in-memory blob present in `repository`; returns the bytes uploaded."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if self.has_blob(repository, digest):
            return 0
        self._monolithic_upload(self._start_upload(repository, digest), digest, bytes(data))
        return len(data)

    def upload_manifest(self, manifest: dict, container, *a, **kw):  # type: ignore[override]
        c = self.get_container(container)

        raw = canonical.dumps(manifest)
        mt = manifest.get("mediaType", "application/vnd.oci.image.manifest.v1+json")
        self.put_manifest(c.api_prefix, c.tag or c.digest, raw, mt)
        resp = requests.Response()
        resp.status_code = 201
        return resp

    # -- referrers ------------------------------------------------------------------------
    def referrers(self, repository: str, digest: str) -> tuple[list[dict], str]:
        """Descriptors whose subject is `digest`: from the referrers API, else the fallback tag."""
        self.prepare(repository)
        r = self.do_request(self.url(f"/v2/{repository}/referrers/{digest}"), "GET",
                            headers={"Accept": "application/vnd.oci.image.index.v1+json"})
        if r.status_code == 200 and r.headers.get("Content-Type", "").startswith("application/vnd.oci.image.index"):
            return list(r.json().get("manifests", [])), "api"
        tag = fallback_tag(digest)
        try:
            raw, _ = self.get_manifest_raw(repository, tag)
        except RegistryError as e:
            if "not found" in e.message:
                return [], "fallback"
            raise
        return list(json.loads(raw).get("manifests", [])), "fallback"


def fallback_tag(digest: str) -> str:
    """The referrers tag schema of the distribution spec: sha256:<hex> → sha256-<hex>."""
    algo, _, hexd = digest.partition(":")
    return f"{algo}-{hexd}"[:128]


class _Adapter(requests.adapters.HTTPAdapter):
    def init_poolmanager(self, *a, **kw):
        kw.setdefault("blocksize", CHUNK)
        super().init_poolmanager(*a, **kw)


class _Reader:
    """A file body for requests that reports progress and cannot be replayed by accident."""

    def __init__(self, f: BinaryIO, size: int, progress: Callable[[int], None] | None) -> None:
        self._f = f
        self._size = size
        self._progress = progress

    def __len__(self) -> int:
        return self._size

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(CHUNK if n is None or n < 0 else n)
        if self._progress and data:
            self._progress(len(data))
        return data

    def __iter__(self):
        while True:
            chunk = self.read(CHUNK)
            if not chunk:
                return
            yield chunk
