"""The pinned definition: build/<alias>.json, the contract between lock, build, check, push and Nix.

Everything a build needs is here, by value or by hash; nothing is looked up at build time.
Written as canonical JSON (sorted keys, fixed indentation, final newline) so that reviewers read
pin changes line by line and two locks of the same inputs are the same bytes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, field_validator

from enginefab.core import canonical
from enginefab.core.errors import LockError
from enginefab.core.fields import (
    Alias, Digest, DownloadUrl, EnvName, EnvValue, Epoch, FileName, GitSha, GitUrl, Id, ImageName, ImagePath, LayerId,
    ImageKind, MediaType, Mode, Name, PortSpec,
    OciName, OciReference, Script, Sha256Hex, Size, Strip, Text, Token, Url, Version, rule_of, show,
)

SCHEMA = "enginefab.definition/v1"

_USER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,31}")
_ALIAS_LIKE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_URL: TypeAdapter = TypeAdapter(DownloadUrl)
_GIT_URL: TypeAdapter = TypeAdapter(GitUrl)
_OCI_REF: TypeAdapter = TypeAdapter(OciReference)
_NAME: TypeAdapter = TypeAdapter(Name)
_OCI_NAME: TypeAdapter = TypeAdapter(OciName)

InputKind = Literal["oci", "wheel", "deb", "url", "git", "manual", "run"]
LayerKind = Literal["base", "debs", "wheels", "files", "archives", "run"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Input(Model):
    """One pinned input. Every kind carries kind, name, version, url, sha256, size."""

    kind: InputKind
    name: str
    version: Version
    url: str | None = Field(description="download URL (https, http, file), registry reference (oci), repository "
                            "(git), or null (manual, run)")
    sha256: Sha256Hex | None = Field(
        description="of the exact bytes (manual/url/wheel/deb/oci blob, git: the archive enginefab makes of the tree), "
        "or of the step (run); null only for a manual input whose upstream publishes no hash, until a user adds the "
        "file (awaiting), or a git input pinned by its tree alone"
    )
    size: Size
    # kind-specific, optional
    filename: FileName | None = None
    arch: Token | None = None
    #: deb: the control paragraph fields scanners read (Package, Version, Architecture, Source…)
    control: dict[Token, Text] | None = None
    #: oci: media type of the blob (base layers)
    media_type: MediaType | None = None
    #: oci: uncompressed digest (diff_id) of a base layer, from the base config
    diff_id: Digest | None = None
    #: url/manual: where in the image (absolute, normalized); unpack archives
    dest: ImagePath | None = None
    unpack: bool = False
    strip_components: Strip = 0
    #: manual: where a user gets the file
    where: Text | None = None
    #: git: the commit, its tree (verified at build time) and the archive's top directory
    commit: GitSha | None = None
    tree: GitSha | None = None
    prefix: FileName | None = None
    #: pins written in engines/: where the hash was published, and who vouches for it
    #: (vendor-published, third-party, recorded-on-first-use)
    source: Text | None = None
    trust: Token | None = None
    #: run: the script and its environment
    script: Script | None = None
    env: dict[EnvName, EnvValue] | None = None
    #: which requirement or package pulled this input in (review aid)
    requested_by: list[Text] | None = None

    @field_validator("name", mode="plain")
    @classmethod
    def _name(cls, v: Any, info: ValidationInfo) -> str:
        """oci: registry/repository and a blob; the others: a package, file or step name (no '/')."""
        try:
            return (_OCI_NAME if info.data.get("kind") == "oci" else _NAME).validate_python(v)
        except ValidationError as e:
            raise ValueError(rule_of(e.errors()[0])) from None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None, info: ValidationInfo) -> str | None:
        """oci: a registry reference; git: a repository; the downloads: an https, http or file URL."""
        if v is None:
            return v
        adapter = {"oci": _OCI_REF, "git": _GIT_URL}.get(info.data.get("kind"), _URL)  # type: ignore[arg-type]
        try:
            return adapter.validate_python(v)
        except ValidationError as e:
            raise ValueError(rule_of(e.errors()[0])) from None

    @property
    def ref(self) -> str:
        """A short human name: kind:name==version."""
        return f"{self.kind}:{self.name}=={self.version}"


class FileEntry(Model):
    """A file, directory or symlink written by a `files` layer."""

    path: ImagePath
    type: Literal["file", "dir", "symlink"] = "file"
    content: Script | None = None
    target: Text | None = None
    mode: Mode = 0o644
    uid: Id = 0
    gid: Id = 0


class Layer(Model):
    """One layer: its kind and inputs. Its bytes are a function of this object and the contract."""

    id: LayerId = Field(description="stable, human-readable: e.g. os/debian-11-aarch64")
    kind: LayerKind
    inputs: list[Input] = Field(default_factory=list)
    files: list[FileEntry] = Field(default_factory=list)
    #: wheels: the installation scheme; debs: none
    scheme: dict[Token, ImagePath] | None = None
    #: wheels: interpreter written into console-script shebangs
    interpreter: ImagePath | None = None
    #: run: build-only inputs (debs, wheels) the steps see but the layer does not hold
    tools: list[Input] | None = None
    #: run: why its bytes differ from build to build, as engines/ declares it (`diff` shows where)
    unreproducible: Text | None = None
    comment: Text = ""


class Compression(Model):
    """The compression contract: every parameter that changes a compressed layer's bytes."""

    algorithm: Literal["gzip", "zstd"] = "gzip"
    level: int = Field(default=6, ge=0, le=22, strict=True)
    implementation: Token = Field(description="zlib (parallel deflate blocks) or libzstd")
    version: Version = Field(description="library version the fingerprint was recorded with")
    block_size: int = Field(default=1 << 20, ge=0, le=1 << 30, strict=True,
                            description="gzip: deflate block size in bytes (zstd: 0)")
    fingerprint: Sha256Hex = Field(description="sha256 of compressing the fixed probe corpus")


class ImageIdentity(Model):
    name: ImageName
    alias: Alias
    engine: Token
    engine_version: Version
    framework: Token
    framework_version: Version
    accelerator: Token
    accelerator_version: Version | None = None
    cudnn: Version | None = None
    nccl: Version | None = None
    min_driver: Version | None = None
    python: Version
    os: Token
    os_version: Version
    glibc: Version
    arch: Token
    platform: dict[Token, Token]
    #: None: a training image (every definition before kinds existed reads as one)
    kind: ImageKind | None = None


class Base(Model):
    reference: OciReference
    digest: Digest
    source: Text = ""
    trust: Token | None = None
    #: the platform manifest digest when `digest` is an index
    manifest: Digest | None = None


class PythonTarget(Model):
    version: Version
    interpreter: ImagePath
    site_packages: ImagePath
    scripts: ImagePath
    #: PEP 425 tags the image's Python accepts, most specific first (abbreviated: the first ones)
    abi: Token
    platforms: list[Token]


class ImageConfig(Model):
    user: str = Field(description="uid:gid (numbers in 0…2**31-1) or user[:group] names")
    workdir: ImagePath
    env: dict[EnvName, EnvValue]
    entrypoint: list[Script] | None = None
    cmd: list[Script] | None = None
    labels: dict[Name, Text] = Field(default_factory=dict)
    #: the config's ExposedPorts (a model image: ["8080/tcp"]); None: the key is absent
    exposed_ports: list[PortSpec] | None = None

    @field_validator("user")
    @classmethod
    def _user(cls, v: str) -> str:
        parts = v.split(":")
        ok = 1 <= len(parts) <= 2 and all(
            (p.isdigit() and p.isascii() and len(p) <= 10 and int(p) <= 2**31 - 1) or _USER_NAME.fullmatch(p)
            for p in parts)
        if not ok:
            raise ValueError(f"{show(v)}: the user is uid:gid (0…2147483647) or user[:group] names")
        return v


class Parent(Model):
    """What a derived image starts from: another image, whose layers are its lower layers byte
    for byte. Everything here is an index pin (read from the parent, not stated in engines/)."""

    #: a matrix image (its build/<alias>.json), or a registry image by digest
    alias: Alias | None = None
    reference: OciReference | None = None
    #: the parent's (platform) manifest digest: its layers and config are the child's base
    manifest: Digest
    #: a matrix parent: sha256 of its definition (build/<alias>.json) when the child was locked
    definition: Digest | None = None
    #: the parent's image config, which the child inherits and extends
    config: ImageConfig
    #: the parent's Python distributions (name → version): constraints for the child, never reinstalled
    distributions: dict[Name, Version] = Field(default_factory=dict)
    #: the parent's Debian packages (names, virtual ones included): not fetched again
    debs: list[Name] = Field(default_factory=list)

    @property
    def label(self) -> str:
        return self.alias or self.reference or self.manifest


class RuntimeCheck(Model):
    """One import-version-compute probe run by the image's own Python."""

    engine: Token
    import_name: Name
    version_expr: Text
    expect_version: Version
    smoke: Script = ""


class Checks(Model):
    """What `enginefab check` needs beyond the layers: probes and the accelerator ABI."""

    runtime: list[RuntimeCheck]
    accelerator_provides: list[Token] = Field(default_factory=list)
    host_provides: list[Token] = Field(default_factory=list)


class Definition(Model):
    schema_: Literal["enginefab.definition/v1"] = Field(default=SCHEMA, alias="schema")
    image: ImageIdentity
    base: Base | None = None
    #: a derived image (`from` in engines/): the image it starts from
    parent: Parent | None = None
    python: PythonTarget
    compression: Compression
    source_date_epoch: Epoch
    layers: list[Layer]
    config: ImageConfig
    checks: Checks
    #: everything from engines/ this definition was locked from; `lock --check` diffs it
    matrix: dict[str, Any]

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def inputs(self) -> list[Input]:
        """What the image is made of (not its run steps' build-only tools: `tools`)."""
        return [i for layer in self.layers for i in layer.inputs]

    def tools(self) -> list[Input]:
        """The build-only inputs its run steps saw (in no layer of the image)."""
        return [i for layer in self.layers for i in layer.tools or []]

    def to_json(self) -> bytes:
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        for layer in data["layers"]:  # url and sha256 are always present, null when there is none
            for i in [*layer.get("inputs", []), *layer.get("tools", [])]:
                i.setdefault("url", None)
                i.setdefault("sha256", None)
        return canonical.dumps_pretty(data)


#: no definition is near this; a bigger file is refused before it is parsed
MAX_BYTES = 64 << 20


def explain(err: Any, data: Any, file: str) -> tuple[str, str | None, str | None]:
    """(message, image, input) for one validation error of a definition: the file, the layer
    by its id, the field and the rule it broke; the input (or file entry) goes in `input`."""
    loc = list(err["loc"])
    image = input_ = None
    where: list[str] = [file]
    try:
        alias = data["image"]["alias"]
        image = alias if isinstance(alias, str) and _ALIAS_LIKE.fullmatch(alias) else None
    except (KeyError, TypeError):
        pass
    node = data
    for i, key in enumerate(loc):
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            break
        parent = loc[i - 1] if i else None
        if isinstance(node, dict) and parent == "layers" and isinstance(node.get("id"), str):
            where.append(f"layer {show(node['id'], 80)}")
        elif isinstance(node, dict) and parent == "inputs" and isinstance(node.get("name"), str):
            input_ = f"{node.get('kind')}:{show(node['name'], 80)}"
        elif isinstance(node, dict) and parent == "files" and isinstance(node.get("path"), str):
            input_ = f"file {show(node['path'], 80)}"
    field = ".".join(str(x) for x in loc) or "(the document)"
    rule = "unknown key" if err["type"] == "extra_forbidden" else rule_of(err)
    return f"{': '.join(where)}: field {field}: {rule}", image, input_


def parse_definition(raw: bytes, file: str) -> Definition:
    """A definition from its bytes, every field validated; LockError naming file, image, layer,
    input and field otherwise."""
    if len(raw) > MAX_BYTES:
        raise LockError(f"{file}: {len(raw)} bytes, more than any definition ({MAX_BYTES})",
                        fix="restore it from git, or re-run `enginefab lock`")
    try:
        data = json.loads(raw, parse_constant=_no_constant)  # NaN, Infinity: no canonical JSON has them
        return Definition.model_validate_json(raw)
    except ValidationError as e:
        msg, image, input_ = explain(e.errors()[0], data, file)
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        rerun = f"`enginefab lock {image}`" if image else "`enginefab lock`"
        raise LockError(msg + more, image=image, input=input_,
                        fix=f"correct the value, or restore the file from git and re-run {rerun}") from None
    except (ValueError, RecursionError) as e:  # not JSON (ValueError: also a byte that is not UTF-8)
        raise LockError(f"{file}: not JSON: {str(e)[:120] or type(e).__name__}",
                        fix="restore the file from git, or re-run `enginefab lock`") from None


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def load_definition(path: Path) -> Definition:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise LockError(
            f"{path} does not exist", fix=f"run `enginefab lock {path.stem[:63]}` to resolve and pin its inputs"
        ) from None
    except OSError as e:
        raise LockError(f"{path}: cannot read it: {e.strerror}", fix="check the path and its permissions") from None
    return parse_definition(raw, str(path))
