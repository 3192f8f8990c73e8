"""Resolve Debian/Ubuntu packages and their dependency closure from apt repositories.

The index comes from aptindex.py, only through a Release signed by a key the repository pins
(aptsig.py); every chosen ``.deb`` is pinned by the sha256 and size of its ``Packages`` entry.
Resolution is a pure function of that index (of one repository, or several merged):

* Pre-Depends and Depends are followed, Recommends and Suggests are not;
* an alternative group ``a | b`` is satisfied by what is already chosen (or provided by a lower
  layer), else by its first alternative that exists, real packages before virtual ones;
* a virtual package is provided by the alphabetically first real package that provides it;
* a root ``name=version`` takes exactly that version; otherwise, and for dependencies, the
  newest version that satisfies the constraint (a Debian suite carries one, a flat repository
  such as NVIDIA's many).
"""

from __future__ import annotations

import re
from pathlib import Path

from debian import deb822
from debian.debian_support import Version

from enginefab.core.definition import Input
from enginefab.core.errors import LockError
from enginefab.engines.locate import similar
from enginefab.engines.model import DEB_ARCH, AptRepo
from enginefab.lock.aptindex import Index, load_index, safe_filename
from enginefab.transport.session import Session

#: fields of the Packages paragraph kept in the lock (dpkg status for scanners, SBOM)
CONTROL_FIELDS = (
    "Package", "Version", "Architecture", "Multi-Arch", "Source", "Maintainer", "Installed-Size",
    "Pre-Depends", "Depends", "Provides", "Section", "Priority", "Homepage", "Description", "Essential",
)


def _satisfies(version: str, rel: tuple[str, str] | None) -> bool:
    if rel is None:
        return True
    op, want = rel
    v, w = Version(version), Version(want)
    return {"<<": v < w, "<=": v <= w, "=": v == w, ">=": v >= w, ">>": v > w}[op]


def closure(
    idx: Index,
    roots: list[str],
    *,
    have: set[str] = frozenset(),  # type: ignore[assignment]
    image: str | None = None,
) -> list[deb822.Packages]:
    """Packages needed for `roots` beyond `have` (names or virtual names provided below)."""
    chosen: dict[str, deb822.Packages] = {}
    provided: set[str] = set(have)

    def is_satisfied(alt: dict) -> bool:
        name = alt["name"]
        if name in chosen or name in have:
            para = chosen.get(name)
            return para is None or _satisfies(para["Version"], alt.get("version"))
        return name in provided and alt.get("version") is None

    def pick(alt: dict) -> deb822.Packages | None:
        for para in idx.packages.all_versions(alt["name"]):
            if _satisfies(para["Version"], alt.get("version")):
                return para
        if alt.get("version") is None:
            for prov in sorted(idx.provides.get(alt["name"], [])):
                return idx.packages[prov]
        return None

    queue: list[tuple[deb822.Packages, str]] = []
    for r in roots:
        para = _root(idx, r, image)
        if para["Package"] not in have:
            queue.append((para, r))
    while queue:
        para, _why = queue.pop(0)
        name = para["Package"]
        if name in chosen or name in have:
            continue
        chosen[name] = para
        for group in para.relations.get("provides", []):
            for alt in group:
                provided.add(alt["name"])
        for field_ in ("pre-depends", "depends"):
            for group in para.relations.get(field_, []):
                group = [dict(a, name=a["name"].split(":")[0]) for a in group]
                if any(is_satisfied(a) for a in group):
                    continue
                for alt in group:
                    dep = pick(alt)
                    if dep is not None:
                        queue.append((dep, name))
                        break
                else:
                    want = " | ".join(a["name"] for a in group)
                    raise LockError(
                        f"{name} depends on {want}, which {idx.label} ({idx.arch}) cannot satisfy",
                        image=image,
                        input=f"deb:{name}",
                        fix="add a repository that carries it, or drop the package",
                    )
    return [chosen[n] for n in sorted(chosen)]


def _root(idx: Index, root: str, image: str | None) -> deb822.Packages:
    """The paragraph a root names: `name`, `name=version` (exactly that), or a virtual name."""
    name, _, version = root.partition("=")
    if version:
        para = next((p for p in idx.packages.all_versions(name) if p["Version"] == version), None)
        if para is None:
            have = [p["Version"] for p in idx.packages.all_versions(name)][:6]
            raise LockError(f"{idx.label} ({idx.arch}) has no {name} version {version}"
                            + (f" (it has {', '.join(have)})" if have else f" (nor any {name})"),
                            image=image, input=f"deb:{name}",
                            fix="check the pinned version in engines/ against the repository's Packages index")
        return para
    para = idx.real(name)
    if para is not None:
        return para
    alts = idx.provides.get(name)
    if alts:
        return idx.packages[sorted(alts)[0]]
    close = similar(name, idx.packages, n=5)  # only names that look alike, best first
    raise LockError(f"no package {name!r} in {idx.label} ({idx.arch})", image=image, input=f"deb:{name}",
                    fix="check the package name" + (f" (similar: {', '.join(close)})" if close else ""))


def to_input(idx: Index, para: deb822.Packages) -> Input:
    control = {k: para[k] for k in CONTROL_FIELDS if k in para}
    repo = idx.repo_of(para)
    rel = safe_filename(repo, para["Filename"], package=para["Package"])
    sha, size = para.get("SHA256", ""), para.get("Size", "")
    if not re.fullmatch(r"[0-9a-f]{64}", sha) or not size.isdigit():
        raise LockError(f"{repo.label}: package {para['Package']} has no valid SHA256 and Size in its index",
                        input=f"deb:{para['Package']}", fix="this index cannot pin the package: use another repository")
    return Input(
        kind="deb",
        name=para["Package"],
        version=para["Version"],
        url=f"{repo.url}/{rel}",
        sha256=sha,
        size=int(size),
        filename=rel.rsplit("/", 1)[-1],
        arch=para["Architecture"],
        control=control,
    )


def resolve(repos: list[AptRepo], arch: str, roots: list[str], have: set[str], *, image: str,
            root: Path, session: Session) -> list[Input]:
    """The closure of `roots` over `repos` (merged; the first to carry a version serves it)."""
    idx = load_index(repos, DEB_ARCH[arch], root, session)
    return [to_input(idx, p) for p in closure(idx, roots, have=have, image=image)]


