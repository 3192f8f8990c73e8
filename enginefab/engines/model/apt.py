"""An apt repository as engines/platforms.toml declares it: where it is and the keys it pins."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from enginefab.core.fields import Token, Text
from enginefab.engines.model.base import Strict

_FPR = re.compile(r"^[0-9A-F]{40}$")


class AptRepo(Strict):
    """An apt repository, trusted through the keys it pins (never unsigned, see lock/aptsig.py).

    Suite-style (``deb URL SUITE COMPONENTS``: ``dists/SUITE/InRelease``) or flat (``deb URL /``,
    as NVIDIA's are: ``URL/InRelease`` and ``URL/Packages``)."""

    url: str = Field(description="https base of the repository (http only with plain_http)")
    suite: Text = Field(default="", description="suite-style: the suite (Codename or Suite of its Release must be this); "
                       "flat: optional, checked the same way when given")
    flat: bool = Field(default=False, description="a flat repository (deb URL /)")
    components: list[Token] = ["main"]
    #: the flavour of the archive, for messages and SBOM purls
    distro: Literal["debian", "ubuntu", "nvidia", "other"] = "debian"
    keyring: list[str] = Field(min_length=1, description="where the repository's public keys come from (one or "
                               "more): an absolute path of a keyring installed on the host (./dev installs it), a path "
                               "relative to engines/, or an https URL; only keys with a pinned fingerprint count")
    fingerprints: list[str] = Field(min_length=1, description="primary-key fingerprints (40 hex) whose signature "
                                    "on the Release is accepted; nothing else is")
    frozen: bool = Field(default=False, description="a snapshot that never changes (snapshot.debian.org style): its "
                         "Valid-Until is not honoured")
    plain_http: bool = Field(default=False, description="the mirror serves no https: fetch over http (the pinned "
                             "signature still decides)")
    source: str = Field(default="", description="where the url and the fingerprints were read")

    @field_validator("fingerprints")
    @classmethod
    def _fprs(cls, v: list[str]) -> list[str]:
        out = [f.replace(" ", "").upper() for f in v]
        for f in out:
            if not _FPR.match(f):
                raise ValueError(f"{f!r} is not a key fingerprint (40 hex digits)")
        return out

    @field_validator("keyring", mode="before")
    @classmethod
    def _keyring(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^(https?|file)://[^\s]+$", v):
            raise ValueError(f"{v!r} is not an https (or http, file) URL")
        return v.rstrip("/")

    def model_post_init(self, _ctx) -> None:
        if self.url.startswith("http://") and not self.plain_http:
            raise ValueError(f"{self.url} is plain http: use https, or set plain_http = true if the mirror serves "
                             "no https (the signature is still required)")
        if not self.flat and not self.suite:
            raise ValueError("a suite-style repository needs suite (or set flat = true for deb URL /)")

    @property
    def label(self) -> str:
        """How messages name it: the suite, or a flat repository's URL."""
        return self.url if self.flat else self.suite

    @property
    def base(self) -> str:
        """The directory holding InRelease."""
        return self.url if self.flat else f"{self.url}/dists/{self.suite}"
