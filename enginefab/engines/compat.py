"""Compatibility facts the definition-level rules check, read from engines/checks/.

Two files, both written by people and both typed (unknown keys are errors):

* ``compat.toml``: what NVIDIA and Huawei publish about their stacks (minimum driver per CUDA
  toolkit, which cuDNN and NCCL releases were built for which CUDA, which frameworks a CANN
  release has adapters for) and what each engine release was built against (cuDNN, minimum
  glibc);
* ``known-broken.toml``: dependency combinations that resolve but break at run time (protobuf 4
  under old TensorFlow, NumPy 2 under old PyTorch, …), checked against the locked versions.

Every entry carries ``source``: where the fact was read. They live in a subdirectory so that the
matrix loader (which reads ``engines/*.toml`` as engine files) never mistakes them for engines.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from enginefab.engines import problems

CHECKS_DIR = Path("engines") / "checks"
COMPAT = "compat.toml"
KNOWN_BROKEN = "known-broken.toml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _spec(v: str) -> str:
    try:
        SpecifierSet(v)
    except InvalidSpecifier as e:
        raise ValueError(f"{v!r} is not a version specifier (e.g. '>=7.6,<8'): {e}") from None
    return v


class CudaFacts(_Strict):
    """One CUDA toolkit version as NVIDIA publishes it."""

    min_driver: str = Field(description="minimum Linux driver (CUDA release notes, table 'toolkit and driver')")
    cudnn: list[str] = Field(description="cuDNN major.minor releases that have a build for this CUDA")
    nccl_min: str = Field(description="first NCCL release with a build for this CUDA")
    source: str


class CannFacts(_Strict):
    """One CANN release: the framework versions it ships adapters for, the driver it pairs with."""

    frameworks: dict[str, str] = Field(description="engine/framework id → version specifier")
    driver: str | None = Field(default=None, description="the Ascend driver/firmware release it pairs with (minimum)")
    python: str | None = Field(default=None, description="Python versions its TBE compiler and adapters support (specifier)")
    source: str

    @field_validator("frameworks")
    @classmethod
    def _specs(cls, v: dict[str, str]) -> dict[str, str]:
        return {k: _spec(s) for k, s in v.items()}


class EngineNeeds(_Strict):
    """What an engine's release binaries were built against, for one accelerator kind."""

    engine: str
    versions: str = Field(description="version specifier of the engine releases this applies to")
    accelerator: str = Field(description='"cuda", "cann" or "any"')
    cuda: str | None = Field(default=None, description="CUDA versions these binaries were built for (specifier)")
    cudnn: str | None = Field(default=None, description="cuDNN versions they load (specifier)")
    glibc: str | None = Field(default=None, description="minimum glibc of the OS")
    source: str

    @field_validator("versions", "cudnn", "cuda", "glibc")
    @classmethod
    def _specs(cls, v: str | None, info) -> str | None:
        return v if v is None or info.field_name == "glibc" else _spec(v)


class CompatFile(_Strict):
    cuda: dict[str, CudaFacts] = Field(default_factory=dict)
    cann: dict[str, CannFacts] = Field(default_factory=dict)
    engine: list[EngineNeeds] = Field(default_factory=list)

    def needs(self, engine: str, version: str, accelerator: str) -> list[EngineNeeds]:
        return [n for n in self.engine if n.engine == engine and n.accelerator in (accelerator, "any")
                and version_in(version, n.versions)]


class Broken(_Strict):
    """A combination that resolves but fails at run time."""

    id: str
    #: the image's engine or framework (matrix id) and the versions affected
    framework: str
    versions: str
    #: the distribution whose locked version breaks it (a PyPI name)
    package: str
    package_versions: str
    symptom: str
    fix: str
    source: str

    @field_validator("versions", "package_versions")
    @classmethod
    def _specs(cls, v: str) -> str:
        return _spec(v)

    @property
    def dist(self) -> str:
        return str(canonicalize_name(self.package))


class KnownBrokenFile(_Strict):
    broken: list[Broken] = Field(default_factory=list)


def version_in(version: str, spec: str) -> bool:
    """PEP 440 containment; versions that are not PEP 440 never match."""
    try:
        return Version(version) in SpecifierSet(spec)
    except (InvalidVersion, InvalidSpecifier):
        return False


def _load(path: Path, model: type[BaseModel]):
    if not path.is_file():
        return model()
    file = f"{path.parent.name}/{path.name}"  # checks/compat.toml, as under engines/
    text, data = problems.read_toml(path, file)
    if isinstance(data, problems.Problem):
        raise problems.MatrixProblems([data])
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise problems.MatrixProblems(problems.from_validation(file, text, e, data, model)) from None


@lru_cache(maxsize=8)
def _cached(path: str, mtime: float, kind: str):
    model = CompatFile if kind == "compat" else KnownBrokenFile
    return _load(Path(path), model)


def _mtime(p: Path) -> float:
    return p.stat().st_mtime if p.exists() else 0.0


def compat(root: Path) -> CompatFile:
    p = root / CHECKS_DIR / COMPAT
    return _cached(str(p), _mtime(p), "compat")


def known_broken(root: Path) -> KnownBrokenFile:
    p = root / CHECKS_DIR / KNOWN_BROKEN
    return _cached(str(p), _mtime(p), "broken")
