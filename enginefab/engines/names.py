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
OS); ``ImageName.format()`` gives back the exact input, spelling included. Which words are
engines is data: a ``Grammar`` read from the [engine] tables of engines/*.toml.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Iterable

ARCHES = ("x86_64", "aarch64")
ACCELERATORS = ("cpu", "cuda", "cann")


class Grammar:
    """The engine names a name may start with, read from engines/ (never a list in the code).

    Each engines/<family>.toml says its id (``name``), other spellings seen in image names
    (``spellings``) and its KungFu-style abbreviation (``abbreviation``, e.g. ``TF``): a new
    family needs nothing but its file."""

    def __init__(self, spellings: dict[str, str], short: dict[str, str]) -> None:
        self.spellings = dict(spellings)  # as spelled in ModelArts names → engine id
        self.short = dict(short)  # KungFu-style abbreviation → engine id

    @classmethod
    def of(cls, engines: Iterable[tuple[str, Iterable[str], str | None]]) -> "Grammar":
        """From (engine id, other spellings, abbreviation) of every family."""
        spellings: dict[str, str] = {}
        short: dict[str, str] = {}
        for name, others, abbrev in engines:
            for token in (name, *others):
                spellings[token] = name
            if abbrev:
                short[abbrev] = name
        return cls(spellings, short)

    def parse(self, text: str) -> "ImageName":
        return parse(text, self)


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
    framework_token: str | None = None
    short: tuple[str, str] = ("", "")  # KungFu style: the engine's and the framework's abbreviation


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
    def format(self) -> str:
        sp = self.spelling
        if sp.style == "kungfu":
            fwv = self.framework_version or self.engine_version
            return f"{sp.short[0]}-{self.engine_version}-{sp.short[1]}-{fwv}-python{self.python}"
        parts = [f"{sp.engine_token or self.engine}_{self.engine_version}"]
        if self.framework and self.framework != self.engine:
            parts.append(f"{sp.framework_token or self.framework}_{self.framework_version}")
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


def parse(text: str, grammar: Grammar) -> ImageName:
    """Parse a canonical name in either spelling; raise NameError_ naming the bad part."""
    text = text.strip()
    m = _KF.match(text)
    if m:
        return _parse_kungfu_style(text, m, grammar)
    tokens = text.split("-")
    # the arch is last and may itself contain "_" (x86_64), so take it first
    arch = tokens.pop() if tokens and tokens[-1] in ARCHES else None
    if not tokens:
        raise NameError_(f"{text!r}: no engine component")
    comps = [_component(text, tok) for tok in tokens]
    key, ver, raw = comps[0]
    if key not in grammar.spellings or ver is None:
        known = sorted(grammar.spellings)
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
        raise NameError_(
            f"{text!r}: the first component {raw!r} must be an engine with its version "
            f"(engines/ has {', '.join(known) or 'no engine family'}"
            + (f"; did you mean {close[0]!r}?)" if close else "; a new family is one engines/<family>.toml)")
        )
    fields: dict[str, str | None] = {"engine": grammar.spellings[key], "engine_version": ver}
    tokens_as_spelled = {"engine": key if key != grammar.spellings[key] else None, "framework": None}
    os_token = None
    compact = False
    seen: set[str] = set()
    for key, ver, raw in comps[1:]:
        if key in grammar.spellings:
            slot = "framework"
            fields["framework"], fields["framework_version"] = grammar.spellings[key], ver
            tokens_as_spelled["framework"] = key if key != grammar.spellings[key] else None
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
        spelling=Spelling(os_token=os_token, os_version_compact=compact, engine_token=tokens_as_spelled["engine"],
                          framework_token=tokens_as_spelled["framework"]),
    )


def _component(text: str, tok: str) -> tuple[str, str | None, str]:
    """(key, version, as written) of one `-`-separated part: `cuda_10.2`, or a bare `cpu`."""
    if tok in ACCELERATORS:
        return tok, None, tok
    cm = _COMPONENT.match(tok)
    if not cm:
        raise NameError_(f"{text!r}: component {tok!r} is not of the form name_version "
                         "(for example pytorch_1.8.0, cuda_10.2, py_3.7, ubuntu_18.04)")
    return cm["key"], cm["ver"], tok


def _parse_kungfu_style(text: str, m: re.Match[str], grammar: Grammar) -> ImageName:
    e, f = m["e"], m["f"]
    for tok in (e, f):
        if tok not in grammar.short:
            raise NameError_(
                f"{text!r}: unknown engine abbreviation {tok!r} (engines/ has {', '.join(sorted(grammar.short)) or 'none'}; "
                "an engine's is `abbreviation` in its [engine] table)"
            )
    return ImageName(
        engine=grammar.short[e],
        engine_version=m["ev"],
        framework=grammar.short[f],
        framework_version=m["fv"],
        python=m["py"],
        spelling=Spelling(style="kungfu", short=(e, f)),
    )
