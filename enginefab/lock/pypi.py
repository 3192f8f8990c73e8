"""Resolve Python requirements for the *target* image, never for the host's Python.

Two steps, each done by the tool best at it:

1. versions: ``uv pip compile`` for the image's Python version and platform (arch + manylinux
   level from the OS's glibc), honouring the engine's constraints;
2. files: for each ``name==version``, the PyPI simple JSON API lists every file with its sha256
   and size; we pick the wheel whose tags the image's Python accepts, most specific first
   (packaging.tags), or the sdist when no wheel fits (built later in the sandbox).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

from enginefab.core.definition import Input
from enginefab.core.errors import EnginefabError, LockError, NoSuchFile
from enginefab.core.pytarget import Target
from enginefab.transport import download
from enginefab.transport.mirrors import Mirrors
from enginefab.transport.session import Session

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
@dataclass(frozen=True)
class Pin:
    name: str
    version: str


def uv_binary() -> str:
    """The uv executable installed beside this Python (the `uv` wheel ships it)."""
    cand = Path(sys.executable).parent / "uv"
    if cand.exists():
        return str(cand)
    try:
        from uv import find_uv_bin  # type: ignore

        return find_uv_bin()
    except Exception:  # pragma: no cover - uv missing entirely
        raise LockError("uv is not installed", fix="pip install uv (it is a dependency of enginefab)") from None


def resolve_versions(
    requirements: list[str],
    constraints: list[str],
    target: Target,
    *,
    image: str,
    session: Session,
    exclude_newer: str | None = None,
) -> list[Pin]:
    """The full closure of `requirements` for `target`, as name==version pins (uv, on the
    session's index, in the session's environment)."""
    if not requirements:
        return []
    index = session.mirrors.index
    # Fail fast and clearly when the index cannot be reached (uv would retry for ~20 s); the
    # page is kept in the session, select_file reads it again for free.
    project_files(_requirement_name(requirements[0]), session, image=image)
    with tempfile.TemporaryDirectory(prefix="enginefab-uv-") as td:
        req = Path(td) / "requirements.in"
        req.write_text("\n".join(requirements) + "\n")
        args = [
            uv_binary(),
            "pip",
            "compile",
            str(req),
            "--python-version",
            target.python,
            "--python-platform",
            target.uv_platform(),
            "--index-url",
            index,
            "--no-header",
            "--no-annotate",
            "--quiet",
            "--no-config",
        ]
        if constraints:
            con = Path(td) / "constraints.txt"
            con.write_text("\n".join(constraints) + "\n")
            args += ["--constraint", str(con)]
        if exclude_newer:
            args += ["--exclude-newer", exclude_newer]
        env = dict(session.environ, UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1")
        env.pop("PIP_CONSTRAINT", None)
        proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        raise _unresolvable(proc.stderr, requirements, constraints, target, image=image, session=session)
    pins = []
    for line in proc.stdout.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = re.match(r"^([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==([^\s;]+)", line)
        if not m:
            raise LockError(f"unexpected line from uv: {line!r}", image=image)
        pins.append(Pin(str(canonicalize_name(m[1])), m[2]))
    return sorted(pins, key=lambda p: p.name)


def _unresolvable(stderr: str, requirements: list[str], constraints: list[str], target: Target, *,
                  image: str, session: Session) -> LockError:
    """Why uv found no closure: a package or version that does not exist (raised from here), or a
    conflict, naming the engines/ entries it involves."""
    _explain_missing(stderr, requirements + constraints, image=image, session=session)
    culprits = conflicting_entries(stderr, requirements, constraints)
    named = "; ".join(f"{kind} entry {entry!r}" for kind, entry in culprits)
    if culprits and culprits[0][0] == "constraints":
        fix = f"loosen or remove the constraints entry {culprits[0][1]!r} in engines/ (the image's constraints)"
    elif culprits:
        fix = "change the requirements entries named above so that one version can satisfy them"
    else:
        fix = "check the package names and versions in engines/ (requirements, constraints)"
    return LockError(
        f"cannot resolve Python requirements for Python {target.python} on {target.uv_platform()}"
        + (f": the conflict involves {named}" if named else "") + ":\n    " + _uv_reason(stderr),
        image=image, input=", ".join(entry for _, entry in culprits) or ", ".join(requirements), fix=fix)


_MENTION = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*(?:==|>=|<=|!=|~=|<|>)")


def conflicting_entries(stderr: str, requirements: list[str], constraints: list[str]) -> list[tuple[str, str]]:
    """The entries of engines/ (("constraints", "urllib3<1.21"), ("requirements", …)) whose
    packages uv's explanation names: constraints first, they are what a resolver is told to obey."""
    said = {str(canonicalize_name(m[1])) for m in _MENTION.finditer(stderr)}
    out = []
    for kind, entries in (("constraints", constraints), ("requirements", requirements)):
        for entry in entries:
            try:
                name = _requirement_name(entry)
            except ValueError:
                continue
            if name in said:
                out.append((kind, entry))
    return out


def _requirement_name(req: str) -> str:
    from packaging.requirements import Requirement

    return str(canonicalize_name(Requirement(req).name))


_NO_VERSION = re.compile(r"there is no version of ([A-Za-z0-9._-]+)(?:\[[^\]]*\])?\s*([=<>!~][^\s,]*)?")
_NOT_FOUND = re.compile(r"\b([A-Za-z0-9._-]+) was not found in the package registry")


def _explain_missing(stderr: str, requested: list[str], *, image: str, session: Session) -> None:
    """Turn uv's "there is no version of X==V" into: no such package, or no such version (and
    which versions exist), naming the requirement from engines/ that asked for it."""
    m = _NO_VERSION.search(stderr) or _NOT_FOUND.search(stderr)
    if m is None:
        return
    name = str(canonicalize_name(m.group(1)))
    asked = next((r for r in requested if _requirement_name(r) == name), name)
    index = session.mirrors.index
    try:
        files = project_files(name, session, image=image)
    except LockError:
        raise LockError(f"no package {name!r} on {index}", image=image, input=asked,
                        fix="check the spelling of the package name in engines/ (requirements)") from None
    versions = sorted({v for v in (_file_version(f["filename"]) for f in files if not f.get("yanked")) if v},
                      key=_sort_key)
    spec = m.group(2) if m.re is _NO_VERSION and m.lastindex and m.lastindex >= 2 else None
    shown = ", ".join(_nearby(versions, spec)) or "none"
    raise LockError(f"{name} has no version matching {spec or asked} on {index} (it has: {shown})",
                    image=image, input=asked, fix="pin a version the index has, in engines/ (requirements, constraints)")


def _sort_key(v: str):
    from packaging.version import InvalidVersion, Version

    try:
        return (0, Version(v))
    except InvalidVersion:
        return (1, v)


def _nearby(versions: list[str], spec: str | None, n: int = 8) -> list[str]:
    """The versions around the one asked for (or the newest), for an error message."""
    want = (spec or "").lstrip("=<>!~")
    if want:
        key = _sort_key(want)
        pos = next((i for i, v in enumerate(versions) if _sort_key(v) >= key), len(versions))
        lo = max(0, pos - n // 2)
        return versions[lo: lo + n]
    return versions[-n:]


def _uv_reason(stderr: str) -> str:
    lines = [ln.rstrip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith("warning:")]
    return "\n    ".join(lines[-12:]) or "uv failed without a message"


def project_files(name: str, session: Session, *, image: str | None = None) -> list[dict]:
    """Every file of a project on the session's index (PEP 691 JSON), read once per session."""
    index, project = session.mirrors.index, str(canonicalize_name(name))
    try:
        return session.remember(("pypi", index, project), lambda: _project_files(index, project, session))
    except EnginefabError as e:  # the shared call knows no image: name it here
        raise type(e)(e.message, image=e.image or image, input=e.input or name, fix=e.fix) from None


def _project_files(index: str, name: str, session: Session) -> list[dict]:
    url = f"{index}/{name}/"
    try:
        data = download.get_json(url, session, headers={"Accept": SIMPLE_JSON}, label=name)
    except NoSuchFile:
        raise LockError(f"no project {name!r} on {index}", input=name,
                        fix="check the spelling of the package name in engines/ (requirements)") from None
    return list(data.get("files", []))  # type: ignore[union-attr]


def select_file(pin: Pin, target: Target, session: Session, *, image: str,
                requested_by: list[str] | None = None) -> Input:
    """The file of `pin` that the target's Python installs: best wheel, else the sdist."""
    files = project_files(pin.name, session, image=image)
    ranks = {t: i for i, t in enumerate(target.tags())}
    best: tuple[int, str, dict] | None = None
    sdist: dict | None = None
    for f in files:
        fn = f["filename"]
        if f.get("yanked"):
            continue
        if fn.endswith(".whl"):
            try:
                n, v, _, tags = parse_wheel_filename(fn)
            except Exception:
                continue
            if canonicalize_name(n) != pin.name or str(v) != _norm(pin.version):
                continue
            rank = min((ranks[t] for t in tags if t in ranks), default=None)
            if rank is not None and (best is None or (rank, fn) < best[:2]):
                best = (rank, fn, f)
        elif fn.endswith((".tar.gz", ".zip")):
            try:
                n, v = parse_sdist_filename(fn)
            except Exception:
                continue
            if canonicalize_name(n) == pin.name and str(v) == _norm(pin.version):
                sdist = f
    chosen = best[2] if best else sdist
    if chosen is None:
        versions = sorted({_file_version(f["filename"]) for f in files} - {None})  # type: ignore[arg-type]
        raise LockError(
            f"{pin.name} {pin.version} has no file for Python {target.python} on {target.arch}"
            + ("" if versions else " (the project has no files)"),
            image=image,
            input=f"{pin.name}=={pin.version}",
            fix="pin another version in the image's constraints",
        )
    sha = chosen.get("hashes", {}).get("sha256")
    if not sha:
        raise LockError(f"the index lists no sha256 for {chosen['filename']}", image=image, input=pin.name)
    return Input(
        kind="wheel" if chosen["filename"].endswith(".whl") else "url",
        name=pin.name,
        version=pin.version,
        url=_absolute(chosen["url"], pin.name, session.mirrors),
        sha256=sha,
        size=int(chosen.get("size") or 0),
        filename=chosen["filename"],
        requested_by=requested_by,
    )


def _absolute(url: str, name: str, mirrors: Mirrors) -> str:
    """The file's upstream URL: relative links resolved against the index, mirror URLs mapped back."""
    if "://" not in url:
        from urllib.parse import urljoin

        url = urljoin(f"{mirrors.index}/{canonicalize_name(name)}/", url)
    return mirrors.upstream(url)


def _norm(v: str) -> str:
    from packaging.version import Version

    return str(Version(v))


def _file_version(fn: str) -> str | None:
    try:
        if fn.endswith(".whl"):
            return str(parse_wheel_filename(fn)[1])
        return str(parse_sdist_filename(fn)[1])
    except Exception:
        return None
