"""What an image takes in besides packages: base images pinned by digest, files behind a login,
files and vendor wheels by URL, git trees, run steps, and the hashes recorded for manual files
(engines/manual-pins.toml)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from enginefab.core.fields import (
    DebName, Digest, EnvName, EnvValue, FileName, GitSha, ImagePath, Mode, Name, OciReference, OptionalImagePath, ProjectFile, Script,
    Sha256Hex, Size, Strip, Text, Url, Version,
)
from enginefab.engines.model.base import TRUST_HELP, Strict, Trust

_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class OciRef(Strict):
    """A base image pinned by digest. ``source`` says where the pin was read (never invented)."""

    reference: OciReference = Field(description="registry/repository:tag as upstream names it")
    digest: Digest = Field(description="sha256:… of the manifest or index the tag pointed at")
    source: Text = Field(min_length=1, description="where this digest was published")
    trust: Trust = Field(description=TRUST_HELP)


class ManualFile(Strict):
    """A file that needs a login to download (Nix: requireFile). The user adds it to the store.

    ``sha256`` is the hash upstream published. Where upstream publishes none, leave it out: the
    input is then *awaiting* until a user adds the file (`enginefab lock --add-file`), which
    records its hash in engines/manual-pins.toml for review. Nothing is ever guessed.
    """

    name: FileName = Field(description="the file name upstream gives it")
    version: Version
    sha256: Sha256Hex | None = None
    size: Size = Field(default=0, description="bytes; 0 when upstream publishes only the hash")
    where: Text = Field(description="where a user gets the file (a page, not a direct link)")
    dest: OptionalImagePath = Field(default="", description="where the file goes in the image (absolute, "
                                    "normalized); empty: only for run steps")
    unpack: bool = False
    source: Text = Field(min_length=1, description="where the sha256 was published (or why none is)")
    trust: Trust = Field(description=TRUST_HELP)

    @model_validator(mode="after")
    def _trust(self) -> "ManualFile":
        if self.sha256 is None and self.trust != "recorded-on-first-use":
            raise ValueError(f"{self.name}: no sha256 is pinned, so its trust is recorded-on-first-use, not {self.trust}")
        if self.sha256 is not None and self.trust == "recorded-on-first-use":
            raise ValueError(f"{self.name}: a sha256 written in engines/ was published by someone: "
                             "vendor-published or third-party (recorded hashes go in engines/manual-pins.toml)")
        return self


class UrlFile(Strict):
    """Any file or archive fetched by URL with a published sha256."""

    name: Name
    version: Version
    url: Url
    sha256: Sha256Hex
    size: Size = Field(default=0, description="bytes; 0 when upstream publishes only the hash")
    dest: OptionalImagePath = Field(default="", description="absolute normalized path in the image (a directory to "
                                    "unpack into, or a file); empty: only available to run steps, under "
                                    "/enginefab/inputs")
    unpack: bool = False
    strip_components: Strip = 0
    source: Text = Field(min_length=1, description="where the sha256 was published")
    trust: Trust = Field(description=TRUST_HELP)


class VendorWheel(Strict):
    """A wheel hosted outside the package index (vendor downloads), pinned by its published sha256."""

    name: Name
    version: Version
    url: Url
    sha256: Sha256Hex
    size: Size = Field(default=0, description="bytes; 0 when the vendor publishes only the hash")
    source: Text = Field(min_length=1, description="where the sha256 was published")
    trust: Trust = Field(description=TRUST_HELP)


class GitSource(Strict):
    """A source tree pinned by commit and tree (git's own content addresses): the build fetches
    the commit, refuses another tree, and makes a tar of it whose bytes are a function of the tree
    (transport/git.py), so `sha256` (of that tar) is stable where a forge's archives are not."""

    name: str
    version: str
    url: Text = Field(description="the repository: https://, http:// or file://")
    commit: GitSha = Field(description="40-hex commit id (a tag's commit: `git rev-parse TAG^{commit}`)")
    tree: GitSha = Field(description="40-hex tree id of that commit (`git rev-parse COMMIT^{tree}`)")
    prefix: str = Field(default="", description="top directory of the archive (e.g. KungFu-0.2.2); empty: none")
    sha256: Sha256Hex | None = Field(default=None, description="of the archive enginefab makes of the tree; "
                                     "unset: the tree id is the only pin (lock --check warns)")
    size: Size = Field(default=0)
    dest: OptionalImagePath = Field(default="", description="where to unpack it in the image (absolute, normalized); "
                                    "empty: only for run steps")
    source: Text = Field(min_length=1, description="where the commit and tree were read")
    trust: Trust = Field(description=TRUST_HELP)

    @field_validator("name", "version", "prefix")
    @classmethod
    def _component(cls, v: str, info) -> str:
        if (v or info.field_name != "prefix") and not _COMPONENT.match(v):
            raise ValueError(f"{v!r}: a git input's {info.field_name} becomes a file or directory name: "
                             "letters, digits, '.', '_', '+', '-', not starting with '.'")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("https://", "http://", "file://")):
            raise ValueError(f"{v!r}: a git input's url is https://, http:// or file:// (other git transports can run commands)")
        if "@" in v.split("://", 1)[1].split("/", 1)[0]:
            raise ValueError("a git input's url holds credentials (user@host): put the repository's public URL here, "
                             "and a mirror with access in registry/mirrors.toml")
        return v

    @property
    def filename(self) -> str:
        return f"{self.prefix or self.name + '-' + self.version}.tar"


class BuildTools(Strict):
    """Build-only inputs of a run step: the step sees them, the image does not hold them
    (docs/build.md, "Source builds"). Pinned by `lock` like the image's own packages."""

    debs: list[DebName] = Field(default_factory=list, description="Debian packages from the image's apt "
                                "repository (a compiler: gcc, libc6-dev, libpython3.9-dev)")
    requirements: list[Text] = Field(default_factory=list, description="PyPI requirements, wheels only "
                                     "(pip, setuptools, cmake<4), resolved for the image's Python")
    constraints: list[Text] = Field(default_factory=list, description="constraints on the tools' closure")


class RunStep(Strict):
    """A command run in the hermetic sandbox over the lower layers (network off)."""

    name: Name
    script: Script
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)
    #: [[image.run]] only
    tools: BuildTools | None = None
    unreproducible: Text | None = Field(default=None, description="why this step's output differs between "
                                        "builds (a compiler that embeds random names): the layer says so")


class AddFile(Strict):
    """A file of the project written into the image (its text inline in the lock), or a link."""

    path: ImagePath = Field(description="where it goes in the image (absolute, normalized)")
    source: ProjectFile | None = Field(default=None, description="a text file under engines/, e.g. "
                                       "files/demo-model/serve.py")
    link: Text | None = Field(default=None, description="instead of a source: a symbolic link to this target")
    mode: Mode = Field(default=0o644, description="permission bits (0o755 for a script run by path)")

    @model_validator(mode="after")
    def _one(self) -> "AddFile":
        if (self.source is None) == (self.link is None):
            raise ValueError(f"{self.path}: give either source (a file under engines/) or link (a link's target)")
        return self


class ManualPin(Strict):
    """A hash recorded by `enginefab lock --add-file` for a manual file upstream publishes none for."""

    sha256: Sha256Hex
    size: Size = 0
    added: Text = ""
    note: Text = ""


class ManualPinsFile(Strict):
    """engines/manual-pins.toml."""

    files: dict[FileName, ManualPin] = Field(default_factory=dict)
