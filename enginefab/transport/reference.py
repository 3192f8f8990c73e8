"""Image references: registry host, repository, tag or digest (docker's grammar, Docker Hub rules)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from enginefab.core.errors import RegistryError
from enginefab.transport.auth import refuse_userinfo

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_REPO = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")


@dataclass(frozen=True)
class Reference:
    registry: str  # host[:port], as used in URLs (registry-1.docker.io for Docker Hub)
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def ref(self) -> str:
        """The tag or digest to ask for (digest wins)."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        s = f"{self.registry}/{self.repository}"
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


def parse_reference(text: str) -> Reference:
    """Parse ``[host[:port]/]repo[:tag][@sha256:…]``; docker.io names map to registry-1.docker.io."""
    refuse_userinfo(text, "the image reference", digest_allowed=True)
    rest = text.strip()
    digest = None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.match(digest):
            raise RegistryError(f"{text!r}: {digest!r} is not a sha256 digest")
    tag = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
        if not _TAG.match(tag):
            raise RegistryError(f"{text!r}: {tag!r} is not a valid tag")
    first, _, remainder = rest.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost"):
        host, repo = first, remainder
    else:
        host, repo = "docker.io", rest
    if host in ("docker.io", "index.docker.io"):
        host = "registry-1.docker.io"
        if "/" not in repo:
            repo = f"library/{repo}"
    if not _REPO.match(repo):
        raise RegistryError(f"{text!r}: {repo!r} is not a valid repository name",
                            fix="lowercase letters, digits and separators . _ - /")
    return Reference(host, repo, tag, digest)
