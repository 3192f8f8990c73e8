"""Resolve Debian/Ubuntu packages and their dependency closure from an apt repository.

The suite's ``InRelease`` is verified with the archive keyring (gpgv) when the host has one;
``Packages.xz`` is fetched by the sha256 that file lists; every chosen ``.deb`` is pinned by
the sha256 and size of its ``Packages`` entry. Resolution is a pure function of that index:

* Pre-Depends and Depends are followed, Recommends and Suggests are not;
* an alternative group ``a | b`` is satisfied by what is already chosen (or provided by a lower
  layer), else by its first alternative that exists, real packages before virtual ones;
* a virtual package is provided by the alphabetically first real package that provides it;
* version constraints are checked against the one version the suite carries.
"""

from __future__ import annotations

import lzma
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from debian import deb822
from debian.debian_support import Version

from enginefab.core import ui
from enginefab.core.definition import Input
from enginefab.core.errors import EnginefabError, LockError
from enginefab.engines.model import DEB_ARCH, AptRepo
from enginefab.transport import download

KEYRINGS = {
    "debian": ["/usr/share/keyrings/debian-archive-keyring.gpg"],
    "ubuntu": ["/usr/share/keyrings/ubuntu-archive-keyring.gpg"],
}

#: fields of the Packages paragraph kept in the lock (dpkg status for scanners, SBOM)
CONTROL_FIELDS = (
    "Package", "Version", "Architecture", "Multi-Arch", "Source", "Maintainer", "Installed-Size",
    "Pre-Depends", "Depends", "Provides", "Section", "Priority", "Homepage", "Description", "Essential",
)


class Paragraphs(Mapping[str, deb822.Packages]):
    """Package name → its Packages paragraph, parsed (python-debian) only when asked for.

    A suite's index has ~60,000 paragraphs and a closure needs a few dozen: scanning the raw
    text for Package/Version/Provides takes a fraction of a second, parsing all of it a dozen."""

    def __init__(self) -> None:
        self.raw: dict[str, str] = {}
        self._parsed: dict[str, deb822.Packages] = {}

    def __getitem__(self, name: str) -> deb822.Packages:
        para = self._parsed.get(name)
        if para is None:
            para = self._parsed[name] = deb822.Packages(self.raw[name])
        return para

    def __iter__(self):
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)

    def __contains__(self, name: object) -> bool:
        return name in self.raw


@dataclass
class Index:
    repo: AptRepo
    arch: str  # Debian arch (amd64, arm64)
    packages: Paragraphs = field(default_factory=Paragraphs)
    provides: dict[str, list[str]] = field(default_factory=dict)

    def real(self, name: str) -> deb822.Packages | None:
        return self.packages.get(name)


def _field(para: str, name: str) -> str | None:
    """The value of a single-line field of a raw paragraph."""
    key = name + ":"
    start = 0 if para.startswith(key) else para.find("\n" + key)
    if start < 0:
        return None
    start += len(key) + (0 if start == 0 else 1)
    end = para.find("\n", start)
    return para[start:end if end >= 0 else None].strip()


def _scan(text: str, packages: Paragraphs, versions: dict[str, str]) -> None:
    """Index raw paragraphs by package (newest version wins)."""
    for para in text.split("\n\n"):
        para = para.strip("\n")
        name = _field(para, "Package") if para else None
        if not name:
            continue
        version = _field(para, "Version") or ""
        old = versions.get(name)
        if old is not None and Version(version) <= Version(old):
            continue
        versions[name] = version
        packages.raw[name] = para


def _provides_map(packages: Paragraphs) -> dict[str, list[str]]:
    """Virtual name → the real packages providing it, sorted."""
    out: dict[str, list[str]] = {}
    for name in sorted(packages.raw):
        prov = _field(packages.raw[name], "Provides")
        for part in (prov or "").split(","):
            virtual = part.strip().split(" ", 1)[0].split(":", 1)[0]
            if virtual and name not in out.setdefault(virtual, []):
                out[virtual].append(name)
    return out


def _release_entries(text: str) -> dict[str, tuple[str, int]]:
    out: dict[str, tuple[str, int]] = {}
    in_sha = False
    for line in text.splitlines():
        if line.startswith("SHA256:"):
            in_sha = True
            continue
        if in_sha:
            if not line.startswith(" "):
                in_sha = False
                continue
            sha, size, path = line.split()
            out[path] = (sha, int(size))
    return out


def _verify_inrelease(data: bytes, repo: AptRepo) -> str:
    """The signed text of InRelease, verified with gpgv when a keyring is present."""
    keyrings = [k for k in KEYRINGS.get(repo.distro, []) if Path(k).is_file()]
    gpgv = shutil.which("gpgv")
    text = data.decode("utf-8", "replace")
    if keyrings and gpgv:
        args = [gpgv, "--quiet"]
        for k in keyrings:
            args += ["--keyring", k]
        proc = subprocess.run(args + ["-"], input=data, capture_output=True)
        if proc.returncode != 0:
            raise LockError(
                f"the signature of {repo.url}/dists/{repo.suite}/InRelease does not verify with {', '.join(keyrings)}",
                input=f"apt:{repo.suite}",
                fix="the index was tampered with or the keyring is outdated (apt-get install debian-archive-keyring)",
            )
    else:
        ui.info(f"[yellow]note:[/] no {repo.distro} archive keyring here; {repo.suite} InRelease is not signature-checked")
    # strip the clearsign armour
    m = re.search(r"-----BEGIN PGP SIGNED MESSAGE-----\n(?:Hash:[^\n]*\n)*\n(.*?)\n-----BEGIN PGP SIGNATURE-----", text, re.S)
    return m.group(1) if m else text


def load_index(repo: AptRepo, arch: str) -> Index:
    """The suite's package index for one Debian arch (amd64, arm64), read once per process."""
    return _load_index(repo.model_dump_json(), arch)


@lru_cache(maxsize=16)
def _load_index(repo_json: str, arch: str) -> Index:
    repo = AptRepo.model_validate_json(repo_json)
    base = f"{repo.url.rstrip('/')}/dists/{repo.suite}"
    try:
        inrelease = download.get_bytes(f"{base}/InRelease", label=f"{repo.suite} InRelease")
    except Exception as e:
        raise LockError(
            f"cannot read the apt repository {base}: {e.message if isinstance(e, EnginefabError) else e}",
            input=f"apt:{repo.suite}",
            fix="check the url and suite in platforms.toml, the network, or registry/mirrors.toml",
        ) from None
    entries = _release_entries(_verify_inrelease(inrelease, repo))
    idx = Index(repo=repo, arch=arch)
    versions: dict[str, str] = {}
    for comp in repo.components:
        rel = f"{comp}/binary-{arch}/Packages.xz"
        if rel not in entries:
            raise LockError(f"{repo.suite} has no {rel}", input=f"apt:{repo.suite}",
                            fix=f"check that the suite carries {arch}")
        sha, size = entries[rel]
        path = download.fetch(download.Want(url=f"{base}/{rel}", sha256=sha, size=size, label=f"{repo.suite} {rel}"))
        _scan(lzma.decompress(path.read_bytes()).decode("utf-8", "replace"), idx.packages, versions)
    idx.provides = _provides_map(idx.packages)
    return idx


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
        para = idx.real(alt["name"])
        if para is not None and _satisfies(para["Version"], alt.get("version")):
            return para
        if alt.get("version") is None:
            for prov in sorted(idx.provides.get(alt["name"], [])):
                return idx.packages[prov]
        return None

    queue: list[tuple[deb822.Packages, str]] = []
    for r in roots:
        para = idx.real(r)
        if para is None:
            alts = idx.provides.get(r)
            if alts:
                para = idx.packages[sorted(alts)[0]]
            else:
                close = sorted(n for n in idx.packages if n.startswith(r[:4]))[:5]
                raise LockError(
                    f"no package {r!r} in {idx.repo.suite} ({idx.arch})",
                    image=image,
                    input=f"deb:{r}",
                    fix="check the package name" + (f" (similar: {', '.join(close)})" if close else ""),
                )
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
                        f"{name} depends on {want}, which {idx.repo.suite} ({idx.arch}) cannot satisfy",
                        image=image,
                        input=f"deb:{name}",
                        fix="add a repository that carries it, or drop the package",
                    )
    return [chosen[n] for n in sorted(chosen)]


def to_input(idx: Index, para: deb822.Packages) -> Input:
    control = {k: para[k] for k in CONTROL_FIELDS if k in para}
    return Input(
        kind="deb",
        name=para["Package"],
        version=para["Version"],
        url=f"{idx.repo.url.rstrip('/')}/{para['Filename']}",
        sha256=para["SHA256"],
        size=int(para["Size"]),
        filename=para["Filename"].rsplit("/", 1)[-1],
        arch=para["Architecture"],
        control=control,
    )


def resolve(repo: AptRepo, arch: str, roots: list[str], have: set[str], *, image: str) -> list[Input]:
    idx = load_index(repo, DEB_ARCH[arch])
    return [to_input(idx, p) for p in closure(idx, roots, have=have, image=image)]


def provided_names(inputs: list[Input]) -> set[str]:
    """Names (real and virtual) the given deb inputs satisfy, for the layers above them."""
    out: set[str] = set()
    for i in inputs:
        out.add(i.name)
        prov = (i.control or {}).get("Provides", "")
        for part in prov.split(","):
            name = part.strip().split(" ")[0].split(":")[0]
            if name:
                out.add(name)
    return out
