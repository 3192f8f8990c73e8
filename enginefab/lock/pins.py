"""Offline checks of the index pins (PyPI wheels and sdists, Debian packages, base image blobs):
the pins engines/ does not state, so `lock --check` cannot derive them again (`derive`).

What can be proven without asking the index:

* each pin is self-consistent: a wheel's file name parses to its name and version and its URL
  ends in that file name; a package's URL lies under the OS's apt repository and its control
  fields are its name, version and architecture; a blob's URL names its digest;
* one file has one hash: every URL, and every wheel or package file name, has the same sha256
  and size in every definition that holds it (a pin replaced in one definition stands out
  against the others);
* where the download cache already holds bytes under the pinned sha256, they are what the pin
  names: the right size, and for a wheel the right project and version (swapping in the hash
  of another file the cache holds would otherwise build that file).

What is left — that the index still serves these bytes, and that the closure is the one the
resolver picks — is `lock --verify` (online).
"""

from __future__ import annotations

import re
import struct
import urllib.parse
import zipfile
from pathlib import Path
from typing import Iterator

from packaging.utils import InvalidSdistFilename, InvalidWheelFilename, canonicalize_name
from packaging.utils import parse_sdist_filename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from enginefab.core.definition import Definition, Input
from enginefab.engines.matrix import Image, Matrix
from enginefab.lock.declared import stack_repos
from enginefab.lock.derive import index_pins_of

FIX = "restore the file from git and re-run `enginefab lock {alias}`"


def _same_version(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def _index_hosts(index: str) -> set[str]:
    """Where the package index serves files from: its own host (PyPI: files.pythonhosted.org)."""
    host = urllib.parse.urlsplit(index).hostname or ""
    return {host, "files.pythonhosted.org"} if host == "pypi.org" else {host}


def _wheel_problems(i: Input, hosts: set[str]) -> Iterator[str]:
    if urllib.parse.urlsplit(i.url or "").hostname not in hosts:
        yield f"its URL {i.url} is not on the package index ({', '.join(sorted(hosts))})"
    if not i.filename or not (i.url or "").split("#")[0].endswith("/" + i.filename):
        yield f"its URL {i.url} does not end in its file name {i.filename}"
        return
    try:
        if i.filename.endswith(".whl"):
            name, version, _, _ = parse_wheel_filename(i.filename)
        else:
            name, version = parse_sdist_filename(i.filename)
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        yield f"its file name {i.filename} is not a wheel's or an sdist's"
        return
    if name != canonicalize_name(i.name) or not _same_version(str(version), i.version):
        yield f"its file {i.filename} is {name} {version}, not {i.name} {i.version}"


def _deb_problems(i: Input, repos: list[str]) -> Iterator[str]:
    if not any((i.url or "").startswith(r.rstrip("/") + "/") for r in repos):
        yield f"its URL {i.url} is not under the image's apt repositories ({', '.join(repos) or 'none'})"
    if not (i.url or "").endswith(".deb"):
        yield f"its URL {i.url} is not a .deb"
    c = i.control or {}
    for key, want in (("Package", i.name), ("Version", i.version), ("Architecture", i.arch)):
        if key in c and want is not None and c[key] != want:
            yield f"its control field {key} is {c[key]!r}, the pin says {want!r}"


def _self_problems(defn: Definition, img: Image, m: Matrix) -> Iterator[tuple[Input, str]]:
    pins = index_pins_of(defn, img)
    repos = [r.url for _, r in stack_repos(img, m)] + ([m.platforms.apt[img.os.apt].url] if img.os.apt else [])
    hosts = _index_hosts(m.platforms.pypi.index)
    for i in pins.wheels + pins.sdists:
        for p in _wheel_problems(i, hosts):
            yield i, p
    for i in pins.os + pins.python + pins.stack + pins.debs:
        if i.kind != "deb":
            yield i, f"an index pin of kind {i.kind} where the planner puts Debian packages"
            continue
        if i.url is None:  # not pinned yet (its repository was not reachable at lock time): lock --check warns
            continue
        for p in _deb_problems(i, repos):
            yield i, p
    for i in pins.base:
        if i.kind != "oci" or not (i.url or "").endswith(f"@sha256:{i.sha256}"):
            yield i, f"its reference {i.url} does not name its digest sha256:{i.sha256}"


#: a central directory entry whose name is a top-level .dist-info member (the name starts 46
#: bytes after the entry's signature)
_DIST_INFO = re.compile(rb"PK\x01\x02.{42}([A-Za-z0-9_.+!-]+)\.dist-info/", re.S)


def _wheel_identity(path: Path) -> tuple[str, str] | None:
    """(project, version) of a wheel from its .dist-info directory name, or None. Reads only the
    zip's central directory (a regular expression over it: torch's 10,000 entries in a few ms)."""
    try:
        with path.open("rb") as f:
            end = f.seek(0, 2)
            f.seek(max(0, end - (1 << 16) - 22))
            tail = f.read()
            at = tail.rfind(b"PK\x05\x06")
            if at < 0 or len(tail) < at + 20:
                return None
            cd_size, cd_offset = struct.unpack("<II", tail[at + 12:at + 20])
            if 0xFFFFFFFF in (cd_size, cd_offset):
                return _zip64_identity(path)
            f.seek(cd_offset)
            found = _DIST_INFO.search(f.read(min(cd_size, 64 << 20)))
    except OSError:
        return None
    if not found:
        return None
    name, _, version = found.group(1).decode().rpartition("-")
    return canonicalize_name(name), version


def _zip64_identity(path: Path) -> tuple[str, str] | None:
    try:
        with zipfile.ZipFile(path) as z:
            top = next((n.split("/", 1)[0] for n in z.namelist() if n.split("/", 1)[0].endswith(".dist-info")), None)
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    if top is None:
        return None
    name, _, version = top[: -len(".dist-info")].rpartition("-")
    return canonicalize_name(name), version


def _cache_problems(i: Input, cache: Path) -> Iterator[str]:
    """The cached bytes under `i.sha256` (if any) must be what `i` names (size; a wheel's name)."""
    if not i.sha256:
        return
    p = cache / "sha256" / i.sha256
    try:
        size = p.stat().st_size
    except OSError:
        return  # not cached: nothing to compare
    if i.size and size != i.size:
        yield (f"the download cache holds {size} bytes under its sha256, the pin says {i.size}: the sha256 "
               f"is another file's")
    elif i.kind == "wheel" and (i.filename or "").endswith(".whl"):
        ident = _wheel_identity(p)
        if ident is None:
            yield "the bytes the download cache holds under its sha256 are not a wheel"
        elif ident[0] != canonicalize_name(i.name) or not _same_version(ident[1], i.version):
            yield f"the bytes under its sha256 are the wheel of {ident[0]} {ident[1]}: the sha256 is another file's"


def incoherent(defns: dict[str, Definition], m: Matrix, cache: Path | None) -> list[str]:
    """Problems of the index pins of these definitions (alias → definition)."""
    out: list[str] = []
    seen: dict[tuple[str, ...], tuple[str, str, str, int]] = {}
    checked: set[tuple[str, str, str, int]] = set()
    for alias, defn in defns.items():
        img = m.get(alias)
        fix = FIX.format(alias=alias)
        for i, p in _self_problems(defn, img, m):
            out.append(f"{alias}: input {i.ref}: {p}; {fix}")
        for layer in defn.layers:
            for i in layer.inputs:
                if i.sha256 is None or i.kind == "run":
                    continue
                keys = ([("url", i.url)] if i.url else []) + ([("file", i.kind, i.filename)] if i.filename else [])
                for key in keys:
                    first = seen.setdefault(key, (alias, i.ref, i.sha256, i.size))
                    if (first[2], first[3]) != (i.sha256, i.size):
                        out.append(f"{alias}: layer {layer.id}: input {i.ref}: {key[-1]} is pinned to sha256 "
                                   f"{i.sha256} ({i.size} bytes) here but to {first[2]} ({first[3]} bytes) in "
                                   f"build/{first[0]}.json: one of them was edited; {fix}")
                        break
                if cache is not None and (i.sha256, i.name, i.version, i.size) not in checked:
                    checked.add((i.sha256, i.name, i.version, i.size))
                    out += [f"{alias}: layer {layer.id}: input {i.ref}: {p}; {fix}" for p in _cache_problems(i, cache)]
    return out
