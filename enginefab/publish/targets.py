"""Push targets: `--to HOST[:PORT][/PREFIX]`, or a name from registry/targets.toml.

A target says where (registry host, repository prefix), how (plain HTTP, a CA certificate) and
which environment variables hold the credentials. It never holds a secret: a `password`,
`token` or `auth` key is refused.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Mapping

from pydantic import BaseModel, ConfigDict, ValidationError

from enginefab.core.errors import RegistryError
from enginefab.transport.auth import refuse_userinfo

FILE = Path("registry") / "targets.toml"
SECRET_KEYS = {"password", "token", "auth", "secret", "identitytoken"}


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    registry: str
    prefix: str = ""
    plain_http: bool = False
    ca_cert: str | None = None
    user_env: str | None = None
    password_env: str | None = None

    @property
    def to(self) -> str:
        return f"{self.registry}/{self.prefix}" if self.prefix else self.registry

    def credentials(self, environ: Mapping[str, str]) -> tuple[str, str] | None:
        """From the named variables of `environ` (the settings' environment); None means: the
        default sources (see auth.credentials_for)."""
        if not (self.user_env or self.password_env):
            return None
        user = environ.get(self.user_env or "")
        pw = environ.get(self.password_env or "")
        if not user or pw is None:
            raise RegistryError(f"the target {self.registry} takes its credentials from ${self.user_env} and "
                                f"${self.password_env}, which are not both set",
                                fix=f"export {self.user_env} and {self.password_env}")
        return user, pw


def load_targets(root: Path) -> dict[str, Target]:
    path = root / FILE
    if not path.is_file():
        return {}
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise RegistryError(f"{FILE}: not valid TOML: {e}", fix=f"correct the syntax in {path}") from None
    out = {}
    for name, raw in (doc.get("targets") or {}).items():
        secret = SECRET_KEYS & {k.lower() for k in raw}
        if secret:
            raise RegistryError(f"{FILE}: target {name!r} holds a secret ({', '.join(sorted(secret))})",
                                fix="remove it; name the environment variables instead (user_env, password_env)")
        try:
            t = Target.model_validate(raw)
        except ValidationError as e:
            first = e.errors()[0]
            raise RegistryError(f"{FILE}: target {name!r}, field {'.'.join(map(str, first['loc']))}: {first['msg']}",
                                fix="keys: registry, prefix, plain_http, ca_cert, user_env, password_env") from None
        refuse_userinfo(t.registry, f"{FILE}: the registry of target {name!r}")
        if t.ca_cert and not Path(t.ca_cert).is_absolute():
            t = t.model_copy(update={"ca_cert": str(root / t.ca_cert)})
        out[name] = t
    return out


def resolve_target(to: str, root: Path, *, plain_http: bool = False, ca_cert: str | None = None) -> Target:
    """`--to` as given: a target's name, else HOST[:PORT][/PREFIX]; flags override the file."""
    refuse_userinfo(to, "--to")
    targets = load_targets(root)
    if to in targets:
        t = targets[to]
        upd = {}
        if plain_http:
            upd["plain_http"] = True
        if ca_cert:
            upd["ca_cert"] = ca_cert
        return t.model_copy(update=upd)
    host, _, prefix = to.strip().strip("/").partition("/")
    if not host or ("." not in host and ":" not in host and host != "localhost"):
        known = ", ".join(sorted(targets)) or "none"
        raise RegistryError(f"{to!r} is neither REGISTRY[/PREFIX] nor a target in {FILE} (targets: {known})",
                            fix="for example --to 127.0.0.1:5000/enginefab, or --to local")
    return Target(registry=host, prefix=prefix, plain_http=plain_http, ca_cert=ca_cert)
