"""The typed matrix: what people write in engines/*.toml.

Two files kinds live in engines/:

* ``platforms.toml`` (platforms.py, apt.py): operating systems, apt repositories, accelerator
  stacks (CUDA, CANN), Python runtimes and the ModelArts conventions every image follows;
* one file per engine family (``pytorch.toml``, ``tensorflow.toml``, …; engine.py): the engine's
  upstream releases (what it publishes builds for, used by the rules) and its images, whose
  inputs (base images, files, wheels, git trees, run steps) are in inputs.py.

Every model forbids unknown keys (base.py), so a typo in a TOML file is an error naming the key.
The names below are the package's interface: import them from here.
"""

from __future__ import annotations

from enginefab.engines.model.apt import AptRepo
from enginefab.engines.model.base import DEB_ARCH, OCI_ARCH, TRUST_HELP, AcceleratorKind, Arch, Day, Instant, Strict, Trust
from enginefab.engines.model.engine import BuildAvail, EngineDef, EngineFile, EngineRelease, ImageDef
from enginefab.engines.model.inputs import (
    AddFile,
    BuildTools,
    GitSource,
    ManualFile,
    ManualPin,
    ManualPinsFile,
    OciRef,
    RunStep,
    UrlFile,
    VendorWheel,
)
from enginefab.engines.model.platforms import (
    CompressionSettings,
    Conventions,
    OSDef,
    PlatformsFile,
    PypiSettings,
    PythonDef,
    ServiceUser,
    StackDef,
)

__all__ = [
    "DEB_ARCH", "OCI_ARCH", "TRUST_HELP", "AcceleratorKind", "AddFile", "AptRepo", "Arch", "BuildAvail", "BuildTools",
    "CompressionSettings",
    "Conventions", "Day", "EngineDef", "EngineFile", "EngineRelease", "GitSource", "ImageDef", "Instant", "ManualFile",
    "ManualPin", "ManualPinsFile", "OSDef", "OciRef", "PlatformsFile", "PypiSettings", "PythonDef", "RunStep",
    "ServiceUser", "StackDef", "Strict", "Trust", "UrlFile", "VendorWheel",
]
