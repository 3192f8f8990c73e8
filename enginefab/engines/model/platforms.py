"""engines/platforms.toml: the ModelArts conventions, operating systems, accelerator stacks,
Python runtimes, PyPI and compression settings every image stands on."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from enginefab.core.fields import (
    DebName, EnvName, EnvValue, Epoch, Id, ImagePath, Sha256Hex, Text, Token, Url, UserName, Version,
)
from enginefab.engines.model.apt import AptRepo
from enginefab.engines.model.base import Arch, Instant, Strict
from enginefab.engines.model.inputs import ManualFile, OciRef, RunStep, UrlFile

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class Conventions(Strict):
    """ModelArts custom-image conventions, applied to every image."""

    user: UserName = "ma-user"
    uid: Id = 1000
    group: UserName = "users"
    gid: Id = 100
    home: ImagePath = "/home/ma-user"
    env: dict[EnvName, EnvValue] = Field(default_factory=lambda: {"PYTHONUNBUFFERED": "1"})


class OSDef(Strict):
    name: Literal["debian", "ubuntu", "euleros"]
    version: Version
    glibc: Version
    arches: list[Arch]
    #: debs = root built from apt packages; oci = from a base image (the stack's, or `base`);
    #: manual = imported from an archive the user supplies
    source: Literal["debs", "oci", "manual"]
    apt: Token | None = None
    packages: list[DebName] = Field(default_factory=list)
    base: dict[Arch, OciRef] = Field(default_factory=dict)
    archive: dict[Arch, ManualFile] = Field(default_factory=dict)
    system_python: Version | None = None
    notes: Text = ""


class ServiceUser(Strict):
    """A vendor's service account the stack's images traditionally have (CANN: HwHiAiUser), with
    the ids it gets here: the ModelArts user keeps uid 1000 and is made a member of its group."""

    name: UserName
    uid: Id = Field(ge=1)
    group: UserName
    gid: Id = Field(ge=1)
    source: Text = Field(min_length=1, description="why these ids (the clash with the conventions' uid, resolved)")


class StackDef(Strict):
    """An accelerator stack: CUDA (+cuDNN, NCCL) or CANN."""

    kind: Literal["cuda", "cann"]
    version: Version
    arches: list[Arch]
    cudart: Version | None = None
    cudnn: Version | None = None
    nccl: Version | None = None
    min_driver: Version | None = None
    #: CANN: the Ascend driver (and firmware) release the stack is made for, checked against compat.toml
    driver: Version | None = None
    #: CANN: its service user (HwHiAiUser), reconciled with the ModelArts user
    service_user: ServiceUser | None = None
    #: CUDA runtime inside the engine wheel (PyPI torch): no CUDA base image needed
    bundled: bool = False
    #: base image per OS id (NVIDIA's CUDA images); a stack made of `packages` has none (the OS's base is used)
    base: dict[Token, OciRef] = Field(default_factory=dict)
    #: apt repositories (ids in [apt]) the stack's packages come from, in order of preference;
    #: the OS's own repository serves their other dependencies
    apt: list[Token] = Field(default_factory=list)
    #: Debian packages of the stack, `name=version` (exactly that version) or `name` (the newest at lock time)
    packages: list[Text] = Field(default_factory=list)
    #: sha256 the vendor published for some of the packages (`name=version` → sha256; trust
    #: vendor-published), pinned while the package awaits its lock, checked against the index then
    published: dict[Text, Sha256Hex] = Field(default_factory=dict)
    #: where `published` was read
    published_source: Text = ""
    #: files behind a login (CANN .run packages)
    manual: list[ManualFile] = Field(default_factory=list)
    run: list[RunStep] = Field(default_factory=list)
    #: sonames the stack provides inside the image
    provides: list[Token] = Field(default_factory=list)
    #: sonames the host driver provides at run time (never shipped)
    host: list[Token] = Field(default_factory=list)
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)
    source: Text = ""
    notes: Text = ""

    @field_validator("published")
    @classmethod
    def _published(cls, v: dict[str, str]) -> dict[str, str]:
        for key, sha in v.items():
            if "=" not in key or not _SHA256.match(sha):
                raise ValueError(f"{key} = {sha!r}: published pins are name=version = sha256 (64 lowercase hex)")
        return v


class PythonDef(Strict):
    """A Python runtime on one OS: how it gets into the image and where wheels go."""

    version: Version
    os: Token
    source: Literal["debs", "base", "url"]
    packages: list[DebName] = Field(default_factory=list)
    files: list[UrlFile] = Field(default_factory=list)
    run: list[RunStep] = Field(default_factory=list)
    interpreter: ImagePath
    site_packages: ImagePath
    scripts: ImagePath = "/usr/local/bin"


class PypiSettings(Strict):
    index: Url = "https://pypi.org/simple"
    #: resolve as of this time (uv --exclude-newer): a re-lock gives the same closure
    exclude_newer: Instant | None = None
    #: an image whose engine release says when it was published resolves as of that day plus
    #: this many days (the newest a closure may be), unless the image sets `as_of`
    release_grace_days: int = Field(default=90, ge=0)


class CompressionSettings(Strict):
    algorithm: Literal["gzip", "zstd"] = "gzip"
    level: int | None = Field(default=None, ge=0, le=22, strict=True)


class PlatformsFile(Strict):
    """engines/platforms.toml."""

    conventions: Conventions = Conventions()
    source_date_epoch: Epoch = 1
    pypi: PypiSettings = PypiSettings()
    compression: CompressionSettings = CompressionSettings()
    apt: dict[Token, AptRepo] = Field(default_factory=dict)
    os: dict[Token, OSDef]
    stack: dict[Token, StackDef] = Field(default_factory=dict)
    python: dict[Token, PythonDef] = Field(default_factory=dict)
