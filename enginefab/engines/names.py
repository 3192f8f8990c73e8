"""Canonical ModelArts-style image names: parse and format, round-trip exact.

Two spellings exist in the wild and both must survive a round trip:

* ModelArts style, components joined by ``-``, each ``key_version``::

      pytorch_1.8.0-cuda_10.2-py_3.7-ubuntu_18.04-x86_64
      horovod_0.20.0-tensorflow_2.1.0-cuda_10.1-py_3.7-ubuntu_18.04-x86_64
      mindspore_1.3.0-cuda_10.1-py_3.7-ubuntu_1804-x86_64       (compact OS version)
      tensorflow_1.15-cann_5.0.2-py_3.7-euler_2.8.3-aarch64      (short engine version)
      pytorch_1.8.0-cpu-py_3.9-debian_11-aarch64                 (no accelerator version)

* KungFu style, tokens joined by ``-``: ``KF-0.2.2-TF-1.13.1-python3.6``.

The parser returns what the name says and nothing more (a KungFu-style name does not say the
OS); ``ImageName.format()`` gives back the exact input, spelling included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

ARCHES = ("x86_64", "aarch64")
ACCELERATORS = ("cpu", "cuda", "cann")

#: engine/framework names as spelled in ModelArts names → our canonical engine id
ENGINE_SPELLINGS = {
    "pytorch": "pytorch",
    "tensorflow": "tensorflow",
    "mindspore": "mindspore",
    "horovod": "horovod",
    "kungfu": "kungfu",
    "mpi": "mpi",
}
#: KungFu-style abbreviations
SHORT_SPELLINGS = {"KF": "kungfu", "TF": "tensorflow", "PT": "pytorch", "MS": "mindspore", "HVD": "horovod"}
SHORT_OF = {v: k for k, v in SHORT_SPELLINGS.items()}

#: OS names as spelled in image names → our canonical OS name
OS_SPELLINGS = {"ubuntu": "ubuntu", "debian": "debian", "euler": "euleros", "euleros": "euleros"}

_VERSION = r"[0-9]+(?:\.[0-9A-Za-z]+)*"
_COMPONENT = re.compile(rf"^(?P<key>[a-z][a-z0-9]*)_(?P<ver>{_VERSION})$")
_KF = re.compile(
    rf"^(?P<e>[A-Z]+)-(?P<ev>{_VERSION})-(?P<f>[A-Z]+)-(?P<fv>{_VERSION})-python(?P<py>[0-9]+\.[0-9]+)$"
)


class NameError_(ValueError):
    """A string that is not an image name; the message says which part is wrong."""


@dataclass(frozen=True)
class Spelling:
    """How a name was written, so that format() reproduces it."""

    style: str = "modelarts"  # "modelarts" | "kungfu"
    os_token: str | None = None  # "euler" for euleros, None = the canonical OS name
    os_version_compact: bool = False  # ubuntu_1804
    engine_token: str | None = None  # as spelled, when it differs from the engine id


@dataclass(frozen=True)
class ImageName:
    engine: str
    engine_version: str
    framework: str | None = None
    framework_version: str | None = None
    accelerator: str | None = None
    accelerator_version: str | None = None
    python: str | None = None
    os: str | None = None
    os_version: str | None = None
    arch: str | None = None
    spelling: Spelling = field(default_factory=Spelling, compare=False)

    # -- the two directions -------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> "ImageName":
        return parse(text)

    def format(self) -> str:
        sp = self.spelling
        if sp.style == "kungfu":
            fw = self.framework or self.engine
            fwv = self.framework_version or self.engine_version
            return (
                f"{SHORT_OF[self.engine]}-{self.engine_version}-{SHORT_OF[fw]}-{fwv}-python{self.python}"
            )
        parts = [f"{sp.engine_token or self.engine}_{self.engine_version}"]
        if self.framework and self.framework != self.engine:
            parts.append(f"{self.framework}_{self.framework_version}")
        if self.accelerator:
            parts.append(
                self.accelerator
                if not self.accelerator_version
                else f"{self.accelerator}_{self.accelerator_version}"
            )
        if self.python:
            parts.append(f"py_{self.python}")
        if self.os:
            osv = self.os_version or ""
            if sp.os_version_compact:
                osv = osv.replace(".", "")
            parts.append(f"{sp.os_token or self.os}_{osv}")
        if self.arch:
            parts.append(self.arch)
        return "-".join(parts)

    def __str__(self) -> str:
        return self.format()

    # -- helpers ------------------------------------------------------------------------
    @property
    def effective_framework(self) -> str:
        return self.framework or self.engine

    @property
    def effective_framework_version(self) -> str:
        return self.framework_version or self.engine_version


def parse(text: str) -> ImageName:
    """Parse a canonical name in either spelling; raise NameError_ naming the bad part."""
    text = text.strip()
    m = _KF.match(text)
    if m:
        e, f = m["e"], m["f"]
        for tok in (e, f):
            if tok not in SHORT_SPELLINGS:
                raise NameError_(
                    f"{text!r}: unknown engine abbreviation {tok!r} (known: {', '.join(sorted(SHORT_SPELLINGS))})"
                )
        return ImageName(
            engine=SHORT_SPELLINGS[e],
            engine_version=m["ev"],
            framework=SHORT_SPELLINGS[f],
            framework_version=m["fv"],
            python=m["py"],
            spelling=Spelling(style="kungfu"),
        )

    tokens = text.split("-")
    # the arch is last and may itself contain "_" (x86_64), so take it first
    arch = None
    if tokens and tokens[-1] in ARCHES:
        arch = tokens.pop()
    if not tokens:
        raise NameError_(f"{text!r}: no engine component")

    comps: list[tuple[str, str | None, str]] = []  # (key, version, raw)
    for tok in tokens:
        if tok in ACCELERATORS:
            comps.append((tok, None, tok))
            continue
        cm = _COMPONENT.match(tok)
        if not cm:
            raise NameError_(
                f"{text!r}: component {tok!r} is not of the form name_version "
                "(for example pytorch_1.8.0, cuda_10.2, py_3.7, ubuntu_18.04)"
            )
        comps.append((cm["key"], cm["ver"], tok))

    key, ver, raw = comps[0]
    if key not in ENGINE_SPELLINGS or ver is None:
        raise NameError_(
            f"{text!r}: the first component {raw!r} must be an engine with its version "
            f"(one of {', '.join(sorted(ENGINE_SPELLINGS))})"
        )
    fields: dict[str, str | None] = {"engine": ENGINE_SPELLINGS[key], "engine_version": ver}
    engine_token = key if key != ENGINE_SPELLINGS[key] else None
    os_token = None
    compact = False
    seen: set[str] = set()
    for key, ver, raw in comps[1:]:
        if key in ENGINE_SPELLINGS:
            slot = "framework"
            fields["framework"], fields["framework_version"] = ENGINE_SPELLINGS[key], ver
        elif key in ACCELERATORS:
            slot = "accelerator"
            fields["accelerator"], fields["accelerator_version"] = key, ver
        elif key == "py":
            slot = "python"
            fields["python"] = ver
        elif key in OS_SPELLINGS:
            slot = "os"
            fields["os"] = OS_SPELLINGS[key]
            os_token = key if key != OS_SPELLINGS[key] else None
            assert ver is not None
            if fields["os"] == "ubuntu" and re.fullmatch(r"[0-9]{4}", ver):
                compact = True
                ver = f"{ver[:2]}.{ver[2:]}"
            fields["os_version"] = ver
        else:
            raise NameError_(f"{text!r}: unknown component {raw!r}")
        if slot in seen:
            raise NameError_(f"{text!r}: {slot} given twice")
        seen.add(slot)
    fields["arch"] = arch
    return ImageName(
        **fields,  # type: ignore[arg-type]
        spelling=Spelling(os_token=os_token, os_version_compact=compact, engine_token=engine_token),
    )
