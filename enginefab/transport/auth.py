"""Registry credentials and authentication challenges.

Credentials come from the environment the edge passes in (`ENGINEFAB_REGISTRY_USER` /
`ENGINEFAB_REGISTRY_PASSWORD`), else the docker config (read, never written): its `credHelpers`
/ `credsStore` helper (`docker-credential-<name> get`), else its `auths`. They are never part
of an address: `user:password@host` is refused (`refuse_userinfo`) before anything prints it.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from enginefab.core.errors import RegistryError

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

