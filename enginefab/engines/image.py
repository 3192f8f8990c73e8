"""One image of the matrix, with every reference resolved (what stages read of an image)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from enginefab.engines.model import (
    OCI_ARCH,
    Conventions,
    EngineDef,
    EngineRelease,
    ImageDef,
    OSDef,
    PythonDef,
    StackDef,
)
from enginefab.engines.names import Grammar, ImageName


@dataclass(frozen=True)
class Image:
    """One image of the matrix, with every reference resolved."""

    d: ImageDef
    engine: EngineDef
    release: EngineRelease
    os_id: str
    os: OSDef
    stack_id: str | None
    stack: StackDef | None
    python_id: str
    python: PythonDef
    conventions: Conventions
    source_date_epoch: int
    file: str
    #: position among the file's [[image]] tables (0-based) and the name grammar of the matrix
    index: int = 0
    grammar: Grammar = field(default_factory=lambda: Grammar({}, {}), compare=False, repr=False)

    @property
    def alias(self) -> str:
        return self.d.alias

    @property
    def name(self) -> str:
        return self.d.name

    @property
    def derived(self) -> bool:
        """Starts from another image (`from`): its layers and config are that image's."""
        return self.d.from_ is not None

    @property
    def parent_reference(self) -> tuple[str, str] | None:
        """(reference, digest) of a registry parent; None for a matrix parent or none."""
        if self.d.from_ is None or "@sha256:" not in self.d.from_:
            return None
        ref, _, digest = self.d.from_.rpartition("@")
        return ref, digest

    @property
    def parent_alias(self) -> str | None:
        """The alias or name of a matrix parent (None: a registry parent, or none)."""
        return self.d.from_ if self.d.from_ is not None and "@" not in self.d.from_ else None

    @property
    def arch(self) -> str:
        return self.d.arch

    @property
    def accelerator(self) -> str:
        return self.stack.kind if self.stack else "cpu"

    @property
    def accelerator_version(self) -> str | None:
        return self.stack.version if self.stack else None

    @property
    def framework(self) -> str:
        return self.d.framework or self.engine.name

    @property
    def framework_version(self) -> str:
        return self.d.framework_version or self.d.engine_version

    @property
    def oci_platform(self) -> dict[str, str]:
        p = {"os": "linux", "architecture": OCI_ARCH[self.arch]}
        if self.arch == "aarch64":
            p["variant"] = "v8"
        return p

    @cached_property
    def parsed_name(self) -> ImageName:
        return self.grammar.parse(self.d.name)

    def label(self) -> str:
        return f"{self.alias} ({self.name})"

    def summary(self) -> dict[str, Any]:
        """The `enginefab list --json` record: a stable contract."""
        s = self.stack
        return {
            "name": self.name,
            "alias": self.alias,
            "engine": self.engine.name,
            "engine_version": self.d.engine_version,
            "framework": self.framework,
            "framework_version": self.framework_version,
            "accelerator": self.accelerator,
            "accelerator_version": self.accelerator_version,
            "cudnn": s.cudnn if s else None,
            "nccl": s.nccl if s else None,
            "min_driver": s.min_driver if s else None,
            "python": self.d.python,
            "os": self.os.name,
            "os_version": self.os.version,
            "arch": self.arch,
            "user": f"{self.conventions.user}:{self.conventions.uid}:{self.conventions.gid}",
            "home": self.conventions.home,
            "demo": self.d.demo,
        }
