"""The typed matrix: what people write in engines/*.toml.

Two files kinds live in engines/:

* ``platforms.toml``: operating systems, apt repositories, accelerator stacks (CUDA, CANN),
  Python runtimes and the ModelArts conventions every image follows;
* one file per engine family (``pytorch.toml``, ``tensorflow.toml``, …): the engine's upstream
  releases (what it publishes builds for, used by the rules) and its images.

Every model forbids unknown keys, so a typo in a TOML file is an error naming the key.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from enginefab.core import instants

from enginefab.core.fields import (
    Alias, DebName, Digest, EnvName, EnvValue, Epoch, FileName, GitSha, Id, ImageName, ImagePath, Name,
    OciReference,
    OptionalImagePath, Script, Sha256Hex, Size, Strip, Text, Token, Url, UserName, Version,
)

Arch = Literal["x86_64", "aarch64"]
AcceleratorKind = Literal["cpu", "cuda", "cann"]

#: OCI platform of each arch
OCI_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
DEB_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")

#: who vouches for a pinned hash: the vendor published it; a third party did (someone else's
#: script, mirror or CI, not the vendor); or it was recorded from the first file a user supplied
Trust = Literal["vendor-published", "third-party", "recorded-on-first-use"]
TRUST_HELP = ("vendor-published (the vendor lists this hash or digest), third-party (another project pins it; "
              "the vendor publishes none), recorded-on-first-use (no published hash: the first file supplied is trusted)")


#: a day (YYYY-MM-DD), or a day or an RFC 3339 UTC instant, as engines/ writes them
Day = Annotated[str, AfterValidator(lambda v: instants.checked(v, day_only=True))]
Instant = Annotated[str, AfterValidator(instants.checked)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


class RunStep(Strict):
    """A command run in the hermetic sandbox over the lower layers (network off)."""

    name: Name
    script: Script
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)


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


class ManualPin(Strict):
    """A hash recorded by `enginefab lock --add-file` for a manual file upstream publishes none for."""

    sha256: Sha256Hex
    size: Size = 0
    added: Text = ""
    note: Text = ""


class ManualPinsFile(Strict):
    """engines/manual-pins.toml."""

    files: dict[FileName, ManualPin] = Field(default_factory=dict)


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
