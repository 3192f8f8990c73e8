"""Registry credentials, authentication challenges, and how one registry wants to be asked.

Credentials come from the environment the edge passes in (`ENGINEFAB_REGISTRY_USER` /
`ENGINEFAB_REGISTRY_PASSWORD`), else the docker config (read, never written): its `credHelpers`
/ `credsStore` helper (`docker-credential-<name> get`), else its `auths`. They are never part
of an address: `user:password@host` is refused (`refuse_userinfo`) before anything prints it.

`Authenticator` learns a registry's scheme from its `/v2/` answer, before any body is sent:
basic credentials then go on every request; bearer tokens come from its token service per set
of scopes (the repository, pull or pull+push, and pull on a mount's source), cached until they
are about to expire; the credentials go to the token service only, never to the registry.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from urllib.parse import parse_qs, urlsplit

from enginefab.core.errors import RegistryError
from enginefab.transport.errors import TransportError, TransportFailed
from enginefab.transport.http import Http

CREDENTIALS_FIX = "check ENGINEFAB_REGISTRY_USER / ENGINEFAB_REGISTRY_PASSWORD or your docker config"
USERINFO_FIX = ("remove the user and password from the address; give them as ENGINEFAB_REGISTRY_USER and "
                "ENGINEFAB_REGISTRY_PASSWORD, a docker credential helper (docker login), or a target's user_env "
                "and password_env")


def refuse_userinfo(address: str, what: str = "the registry address", *, digest_allowed: bool = False) -> None:
    """Refuse `user[:password]@` in a registry address (or an image reference, whose only `@`
    may be the one before its digest), without repeating any of it."""
    rest = address.strip()
    if digest_allowed:
        rest = re.sub(r"@[A-Za-z0-9+._-]+:[0-9A-Fa-f]+$", "", rest)
    if "@" in rest:
        after = rest.rsplit("@", 1)[1].split("/", 1)[0]
        raise RegistryError(f"{what} holds credentials (user:password@ before {after!r}): refused, not used, "
                            "printed or stored", fix=USERINFO_FIX)


def credentials_for(host: str, env: Mapping[str, str]) -> tuple[str, str] | None:
    """(user, password) for `host`, or None."""
    user = env.get("ENGINEFAB_REGISTRY_USER")
    pw = env.get("ENGINEFAB_REGISTRY_PASSWORD")
    if user and pw is not None:
        return user, pw
    cfg_dir = env.get("DOCKER_CONFIG") or str(Path(env.get("HOME") or Path.home()) / ".docker")
    try:
        cfg = json.loads((Path(cfg_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(cfg, dict):
        return None
    helper = (cfg.get("credHelpers") or {}).get(host) or cfg.get("credsStore")
    if isinstance(helper, str) and helper:
        got = _from_helper(helper, host, env)
        if got:
            return got
    auths = cfg.get("auths") or {}
    entry = auths.get(host) or auths.get(f"https://{host}")
    if isinstance(entry, dict) and entry.get("auth"):
        try:
            u, _, p = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return u, p
    return None


def _from_helper(helper: str, host: str, env: Mapping[str, str]) -> tuple[str, str] | None:
    """The docker credential-helper protocol: the host on stdin, {Username, Secret} on stdout."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", helper):
        return None
    try:
        p = subprocess.run([f"docker-credential-{helper}", "get"], input=host.encode(), capture_output=True,
                           timeout=30, env=dict(env))
    except (OSError, subprocess.TimeoutExpired):
        return None
    if p.returncode != 0:
        return None  # "credentials not found" and the like: fall back to `auths`
    try:
        d = json.loads(p.stdout)
        return str(d["Username"]), str(d["Secret"])
    except (ValueError, KeyError, TypeError):
        return None


def basic(credentials: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()


@dataclass(frozen=True)
class Challenge:
    """A `WWW-Authenticate` challenge: the scheme (lowercase) and its parameters."""

    scheme: str
    params: dict[str, str]

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str:
        return self.params.get("service", "")

    @property
    def scope(self) -> str:
        return self.params.get("scope", "")


_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*,?')


def parse_challenge(header: str) -> Challenge:
    """RFC 7235: `Bearer realm="…",service="…",scope="…"` (quoted or token values, `\\"` escapes)."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if not m or m.end() == pos:
            break
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
        pos = m.end()
    return Challenge(scheme.lower(), params)



class Authenticator:
    """The authentication of one registry host; shared by upload threads (tokens under a lock)."""

    def __init__(self, host: str, credentials: tuple[str, str] | None, http: Http) -> None:
        self.host, self.credentials, self.http = host, credentials, http
        self.scheme: str | None = None  # "none" | "basic" | "bearer", learned from /v2/
        self._challenge: Challenge | None = None
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}  # scopes → (token, expiry)
        self._push_repos: set[str] = set()
        self._lock = threading.Lock()

    def learn(self, status: int, challenge: str) -> str:
        """The scheme, from the status and WWW-Authenticate of the registry's `/v2/` answer (401
        or 200; the caller handles the rest)."""
        if status == 200:
            self.scheme = "none"
            return self.scheme
        ch = parse_challenge(challenge)
        if ch.scheme == "basic":
            if not self.credentials:
                raise RegistryError(f"{self.host} requires a username and password",
                                    fix="set ENGINEFAB_REGISTRY_USER and ENGINEFAB_REGISTRY_PASSWORD, or docker login")
        elif ch.scheme == "bearer":
            if not ch.realm:
                raise RegistryError(f"{self.host} asks for a bearer token but names no token service")
            self._challenge = ch
        else:
            raise RegistryError(f"{self.host} asks for an unknown authentication scheme {ch.scheme[:30]!r}")
        self.scheme = ch.scheme
        return self.scheme

    def headers(self, url: str, method: str) -> tuple[dict[str, str], tuple[str, ...]]:
        """The Authorization header for a request, and the token scopes it carries."""
        if self.scheme == "basic" and self.credentials:
            return {"Authorization": basic(self.credentials)}, ()
        if self.scheme == "bearer":
            scopes = self.scopes(url, method)
            if scopes:
                return {"Authorization": f"Bearer {self.token(scopes)}"}, scopes
        return {}, ()

    def renewed(self, challenge: str, scopes: tuple[str, ...]) -> dict[str, str]:
        """After a 401: a fresh token for what it asked for (`challenge`) and what we had."""
        wanted = tuple(sorted(set(scopes) | set(parse_challenge(challenge).scope.split())))
        return {"Authorization": f"Bearer {self.token(wanted, refresh=True)}"}

    def for_repository(self, repository: str, push: bool) -> None:
        """Fetch the repository's token now, before any body is sent."""
        if self.scheme != "bearer":
            return
        if push:
            with self._lock:
                self._push_repos.add(repository)
        self.token((f"repository:{repository}:{'pull,push' if push else 'pull'}",))

    def scopes(self, url: str, method: str) -> tuple[str, ...]:
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

    def token(self, scopes: tuple[str, ...], refresh: bool = False) -> str:
        """A bearer token for these scopes (cached until 10 s before it expires)."""
        with self._lock:
            got = self._tokens.get(scopes)
            if got and not refresh and got[1] > time.monotonic() + 10:
                return got[0]
        ch = self._challenge
        assert ch is not None, "token() before learn() saw a bearer challenge"
        params = ([("service", ch.service)] if ch.service else []) + [("scope", sc) for sc in scopes]
        headers = {"Accept": "application/json"}
        if self.credentials:
            headers["Authorization"] = basic(self.credentials)
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
