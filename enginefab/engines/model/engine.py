"""One engines/<family>.toml: the engine, the releases upstream published (what the rules
read), and its images."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from enginefab.core.fields import (
    Alias, DebName, EnvName, EnvValue, ImageKind, ImageName, Name, PortSpec, Script, Text, Token, Version,
)
from enginefab.engines.model.base import AcceleratorKind, Arch, Day, Instant, Strict
from enginefab.engines.model.inputs import AddFile, GitSource, ManualFile, OciRef, RunStep, UrlFile, VendorWheel

#: `from`: an alias or name of the matrix, or a registry reference pinned by digest
ParentKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,511}$", max_length=512)]


class BuildAvail(Strict):
    """Builds an upstream release publishes: one accelerator kind, its versions, the arches."""

    accelerator: AcceleratorKind
    versions: list[Version] = Field(default_factory=list)
    arches: list[Arch]


class EngineRelease(Strict):
    version: Version
    python: list[Version]
    builds: list[BuildAvail]
    #: for engines layered over a framework (horovod, kungfu): framework → version specifier
    frameworks: dict[Token, Text] = Field(default_factory=dict)
    source: Text = ""
    #: the day upstream published it (YYYY-MM-DD): its images resolve PyPI as of then + the grace
    published: Day | None = None


class EngineDef(Strict):
    name: Token
    display: Text
    pypi: Name | None = None
    import_name: Name
    version_expr: Text
    smoke: Script = ""
    #: how image names may spell the engine besides `name` (historical spellings), and its
    #: KungFu-style abbreviation (KF-0.2.2-TF-1.13.1-python3.6): the name grammar reads them
    spellings: list[Token] = Field(default_factory=list)
    abbreviation: str | None = Field(default=None, pattern=r"^[A-Z]+$")
    releases: list[EngineRelease]


class ImageDef(Strict):
    alias: Alias
    #: a derived image: the alias or name of another image of the matrix, or a registry image by
    #: digest (`registry/repository[:tag]@sha256:…`); its layers are the parent's, byte for byte
    from_: ParentKey | None = Field(default=None, alias="from")
    name: ImageName
    engine_version: Version
    framework: Token | None = None
    framework_version: Version | None = None
    python: Version
    os: Token
    accelerator: Token = Field(description='"cpu" or a stack id from platforms.toml')
    arch: Arch
    requirements: list[Text] = Field(default_factory=list)
    constraints: list[Text] = Field(default_factory=list)
    debs: list[DebName] = Field(default_factory=list)
    #: wheels from vendor hosts (their dependencies go in requirements)
    wheels: list[VendorWheel] = Field(default_factory=list)
    files: list[UrlFile] = Field(default_factory=list)
    #: source trees pinned by commit and tree (archives made by enginefab, for run steps or unpacked)
    git: list[GitSource] = Field(default_factory=list)
    manual: list[ManualFile] = Field(default_factory=list)
    run: list[RunStep] = Field(default_factory=list)
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)
    #: ModelArts' two kinds of custom image: for a training job, or for a model served over HTTP
    #: (checked: port 8080, GET /health, /home/mind/model, a boot command)
    kind: ImageKind = "training"
    #: the boot command (the config's Cmd); default: the image's Python
    cmd: list[Script] | None = None
    #: ports the image serves on (the config's ExposedPorts): a model image has "8080/tcp"
    ports: list[PortSpec] = Field(default_factory=list)
    #: the image's own files from the project (text, under engines/) or links, in one layer on top
    add: list[AddFile] = Field(default_factory=list)
    #: a base image of its own (e.g. a -devel CUDA image for images that compile)
    base: OciRef | None = None
    demo: bool = False
    description: Text = ""
    #: resolve PyPI as of this day or RFC 3339 UTC instant (default: the release's `published` + grace)
    as_of: Instant | None = None


class EngineFile(Strict):
    """One engines/<family>.toml."""

    engine: EngineDef
    image: list[ImageDef] = Field(default_factory=list)
