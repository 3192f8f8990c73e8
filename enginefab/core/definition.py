"""The pinned definition: build/<alias>.json, the contract between lock, build, check, push and Nix.

Everything a build needs is here, by value or by hash; nothing is looked up at build time.
Written as canonical JSON (sorted keys, fixed indentation, final newline) so that reviewers read
pin changes line by line and two locks of the same inputs are the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from enginefab.core import canonical
from enginefab.core.errors import LockError

SCHEMA = "enginefab.definition/v1"

InputKind = Literal["oci", "wheel", "deb", "url", "git", "manual", "run"]
LayerKind = Literal["base", "debs", "wheels", "files", "archives", "run"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Input(Model):
    """One pinned input. Every kind carries kind, name, version, url, sha256, size."""

    kind: InputKind
    name: str
    version: str
    url: str | None = Field(description="download URL, registry reference (oci), repository (git), or null (manual, run)")
    sha256: str | None = Field(
        description="of the exact bytes (manual/url/wheel/deb/oci blob, git: the archive enginefab makes of the tree), "
        "or of the step (run); null only for a manual input whose upstream publishes no hash, until a user adds the "
        "file (awaiting), or a git input pinned by its tree alone"
    )
    size: int = Field(ge=0)
    # kind-specific, optional
    filename: str | None = None
    arch: str | None = None
    #: deb: the control paragraph fields scanners read (Package, Version, Architecture, Source…)
    control: dict[str, str] | None = None
    #: oci: media type of the blob (base layers)
    media_type: str | None = None
    #: oci: uncompressed digest (diff_id) of a base layer, from the base config
    diff_id: str | None = None
    #: url/manual: where in the image; unpack archives
    dest: str | None = None
    unpack: bool = False
    strip_components: int = 0
    #: manual: where a user gets the file
    where: str | None = None
    #: git: the commit, its tree (verified at build time) and the archive's top directory
    commit: str | None = None
    tree: str | None = None
    prefix: str | None = None
    #: pins written in engines/: where the hash was published, and who vouches for it
    #: (vendor-published, third-party, recorded-on-first-use)
    source: str | None = None
    trust: str | None = None
    #: run: the script and its environment
    script: str | None = None
    env: dict[str, str] | None = None
    #: which requirement or package pulled this input in (review aid)
    requested_by: list[str] | None = None

    @property
    def ref(self) -> str:
        """A short human name: kind:name==version."""
        return f"{self.kind}:{self.name}=={self.version}"


class FileEntry(Model):
    """A file, directory or symlink written by a `files` layer."""

    path: str
    type: Literal["file", "dir", "symlink"] = "file"
    content: str | None = None
    target: str | None = None
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


class Layer(Model):
    """One layer: its kind and inputs. Its bytes are a function of this object and the contract."""

    id: str = Field(description="stable, human-readable: e.g. os/debian-11-aarch64")
    kind: LayerKind
    inputs: list[Input] = Field(default_factory=list)
    files: list[FileEntry] = Field(default_factory=list)
    #: wheels: the installation scheme; debs: none
    scheme: dict[str, str] | None = None
    #: wheels: interpreter written into console-script shebangs
    interpreter: str | None = None
    comment: str = ""


class Compression(Model):
    """The compression contract: every parameter that changes a compressed layer's bytes."""

    algorithm: Literal["gzip", "zstd"] = "gzip"
    level: int = 6
    implementation: str = Field(description="zlib (parallel deflate blocks) or libzstd")
    version: str = Field(description="library version the fingerprint was recorded with")
    block_size: int = Field(default=1 << 20, description="gzip: deflate block size in bytes")
    fingerprint: str = Field(description="sha256 of compressing the fixed probe corpus")


class ImageIdentity(Model):
    name: str
    alias: str
    engine: str
    engine_version: str
    framework: str
    framework_version: str
    accelerator: str
    accelerator_version: str | None = None
    cudnn: str | None = None
    nccl: str | None = None
    min_driver: str | None = None
    python: str
    os: str
    os_version: str
    glibc: str
    arch: str
    platform: dict[str, str]


class Base(Model):
    reference: str
    digest: str
    source: str = ""
    trust: str | None = None
    #: the platform manifest digest when `digest` is an index
    manifest: str | None = None


class PythonTarget(Model):
    version: str
    interpreter: str
    site_packages: str
    scripts: str
    #: PEP 425 tags the image's Python accepts, most specific first (abbreviated: the first ones)
    abi: str
    platforms: list[str]


class ImageConfig(Model):
    user: str
    workdir: str
    env: dict[str, str]
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class RuntimeCheck(Model):
    """One import-version-compute probe run by the image's own Python."""

    engine: str
    import_name: str
    version_expr: str
    expect_version: str
    smoke: str = ""


class Checks(Model):
    """What `enginefab check` needs beyond the layers: probes and the accelerator ABI."""

    runtime: list[RuntimeCheck]
    accelerator_provides: list[str] = Field(default_factory=list)
    host_provides: list[str] = Field(default_factory=list)


class Definition(Model):
    schema_: str = Field(default=SCHEMA, alias="schema")
    image: ImageIdentity
    base: Base | None = None
    python: PythonTarget
    compression: Compression
    source_date_epoch: int
    layers: list[Layer]
    config: ImageConfig
    checks: Checks
    #: everything from engines/ this definition was locked from; `lock --check` diffs it
    matrix: dict[str, Any]

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def inputs(self) -> list[Input]:
        return [i for layer in self.layers for i in layer.inputs]

    def to_json(self) -> bytes:
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        for layer in data["layers"]:  # url and sha256 are always present, null when there is none
            for i in layer.get("inputs", []):
                i.setdefault("url", None)
                i.setdefault("sha256", None)
        return canonical.dumps_pretty(data)


def load_definition(path: Path) -> Definition:
    try:
        return Definition.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise LockError(
            f"{path} does not exist", fix=f"run `enginefab lock {path.stem}` to resolve and pin its inputs"
        ) from None
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise LockError(
            f"{path}: field {where}: {first['msg']}", fix="re-run `enginefab lock` to regenerate it"
        ) from None

