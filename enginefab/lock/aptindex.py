"""An apt repository's package index, read only through its verified Release (aptsig.py).

Suite-style repositories (``dists/SUITE/InRelease``, ``COMPONENT/binary-ARCH/Packages.xz``) and
flat ones (``deb URL /``: ``URL/InRelease``, ``URL/Packages.gz``, as NVIDIA's are). The
Packages file is fetched by the sha256 the verified Release lists for it; every version of every
package is kept (a flat repository carries many, and a matrix may pin one), the newest being the
one a name without a version means. Each paragraph remembers the repository it came from, so
that indexes of several repositories merge into one the resolver reads.
"""

from __future__ import annotations

import gzip
import lzma
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from debian import deb822
from debian.debian_support import Version

from enginefab.core.errors import EnginefabError, LockError
from enginefab.engines.model import AptRepo
from enginefab.lock import aptsig
from enginefab.transport import download
from enginefab.transport.session import Session

#: index files in the order they are preferred (the Release must list the one used)
PACKAGES_FILES = ("Packages.xz", "Packages.gz", "Packages")
_SAFE_FILENAME = re.compile(r"^(\./)?([A-Za-z0-9+_.~-]+/)*[A-Za-z0-9+_.~:-]+\.deb$")


class Paragraphs(Mapping[str, deb822.Packages]):
    """Package name → its newest Packages paragraph, parsed (python-debian) only when asked for.

    A suite's index has ~60,000 paragraphs and a closure needs a few dozen: scanning the raw
    text for Package/Version/Provides takes a fraction of a second, parsing all of it a dozen."""

    def __init__(self) -> None:
        self.raw: dict[str, str] = {}
        #: name → version → raw paragraph (every version the repositories carry)
        self.versions: dict[str, dict[str, str]] = {}
        #: (name, version) → the repository that carries it
        self.origin: dict[tuple[str, str], AptRepo] = {}
        self._parsed: dict[str, deb822.Packages] = {}

    def __getitem__(self, name: str) -> deb822.Packages:
        return self._parse(self.raw[name])

    def _parse(self, raw: str) -> deb822.Packages:
        para = self._parsed.get(raw)
        if para is None:
            para = self._parsed[raw] = deb822.Packages(raw)
        return para

    def all_versions(self, name: str) -> list[deb822.Packages]:
        """Every version of `name`, newest first."""
        byv = self.versions.get(name, {})
        return [self._parse(byv[v]) for v in sorted(byv, key=Version, reverse=True)]

    def __iter__(self):
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)

    def __contains__(self, name: object) -> bool:
        return name in self.raw

    def add(self, name: str, version: str, raw: str, repo: AptRepo) -> None:
        """Record one paragraph; the first repository to carry a (name, version) keeps it."""
        if (name, version) in self.origin:
            return
        self.versions.setdefault(name, {})[version] = raw
        self.origin[(name, version)] = repo
        old = self.raw.get(name)
        if old is None or Version(version) > Version(field_of(old, "Version") or ""):
            self.raw[name] = raw


@dataclass
class Index:
    repos: list[AptRepo]
    arch: str  # Debian arch (amd64, arm64)
    packages: Paragraphs = field(default_factory=Paragraphs)
    provides: dict[str, list[str]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return " + ".join(r.suite or r.url for r in self.repos)

    def real(self, name: str) -> deb822.Packages | None:
        return self.packages.get(name)

    def repo_of(self, para: deb822.Packages) -> AptRepo:
        return self.packages.origin[(para["Package"], para["Version"])]


def field_of(para: str, name: str) -> str | None:
    """The value of a single-line field of a raw paragraph."""
    key = name + ":"
    start = 0 if para.startswith(key) else para.find("\n" + key)
    if start < 0:
        return None
    start += len(key) + (0 if start == 0 else 1)
    end = para.find("\n", start)
    return para[start:end if end >= 0 else None].strip()


def scan(text: str, packages: Paragraphs, repo: AptRepo, arch: str | None = None) -> None:
    """Index the raw paragraphs of one Packages file (of `arch` and `all` only, when given: a
    flat repository may mix architectures)."""
    for para in text.split("\n\n"):
        para = para.strip("\n")
        name = field_of(para, "Package") if para else None
        if not name or (arch and field_of(para, "Architecture") not in (arch, "all")):
            continue
        packages.add(name, field_of(para, "Version") or "", para, repo)


def provides_map(packages: Paragraphs) -> dict[str, list[str]]:
    """Virtual name → the real packages providing it (their newest versions), sorted."""
    out: dict[str, list[str]] = {}
    for name in sorted(packages.raw):
        prov = field_of(packages.raw[name], "Provides")
        for part in (prov or "").split(","):
            virtual = part.strip().split(" ", 1)[0].split(":", 1)[0]
            if virtual and name not in out.setdefault(virtual, []):
                out[virtual].append(name)
    return out


def release_entries(text: str) -> dict[str, tuple[str, int]]:
    """path → (sha256, size) of the SHA256 list of a Release."""
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
            parts = line.split()
            if len(parts) == 3 and parts[1].isdigit():
                out[parts[2]] = (parts[0], int(parts[1]))
    return out


def safe_filename(repo: AptRepo, filename: str, *, package: str) -> str:
    """A Packages `Filename` as a path below the repository (never absolute, never `..`)."""
    if not _SAFE_FILENAME.match(filename) or ".." in filename.split("/"):
        raise LockError(f"{repo.label}: package {package} has the file name {filename!r}, which is not a path below "
                        "the repository", input=f"deb:{package}", fix="this index is hostile or broken: do not use it")
    return filename[2:] if filename.startswith("./") else filename


# -- I/O: keys, the signed Release, the Packages files -------------------------------------


def keyring_bytes(repo: AptRepo, root: Path, session: Session) -> bytes:
    """The repository's public keys (binary OpenPGP packets), from host keyrings (./dev installs
    them), files under engines/, or downloads. Only the pinned fingerprints among them count
    (aptsig.verify_signed)."""
    return b"".join(aptsig.dearmor(_one_keyring(repo, where, root, session)) for where in repo.keyring)


def _one_keyring(repo: AptRepo, where: str, root: Path, session: Session) -> bytes:
    what = f"apt:{repo.label}"
    if re.match(r"^(https|http|file)://", where):
        try:
            return download.get_bytes(where, session, label=f"{repo.label} key")
        except EnginefabError as e:
            raise LockError(f"cannot fetch the key of {repo.label} from {where}: {e.message}", input=what,
                            fix="check the network or the keyring url in platforms.toml") from None
    path = Path(where) if where.startswith("/") else root / "engines" / where
    if not path.is_file():
        fix = ("./dev setup installs it (apt-get install debian-archive-keyring)" if "debian-archive" in path.name
               else f"install the package that ships {path}, or point keyring at the key's file or URL")
        raise LockError(f"the keyring of {repo.label}, {path}, is not here: its index cannot be verified (and is "
                        "never used unverified)", input=what, fix=fix)
    return path.read_bytes()


def verified_release(repo: AptRepo, root: Path, session: Session, *, now: datetime | None = None) -> str:
    """The text of the repository's Release, signed by a pinned key, for the declared suite,
    unexpired. InRelease first; Release + Release.gpg where there is no InRelease."""
    where = f"apt:{repo.label}"
    keys = keyring_bytes(repo, root, session)
    try:
        data = download.get_bytes(f"{repo.base}/InRelease", session, label=f"{repo.label} InRelease")
        text = aptsig.verify_signed(repo, keys, data, what=f"{repo.base}/InRelease")
    except LockError:
        raise
    except EnginefabError as first:
        try:
            data = download.get_bytes(f"{repo.base}/Release", session, label=f"{repo.label} Release")
            sig = download.get_bytes(f"{repo.base}/Release.gpg", session, label=f"{repo.label} Release.gpg")
        except EnginefabError:
            raise LockError(f"cannot read the apt repository {repo.base}: {first.message}", input=where,
                            fix="check the url and suite in platforms.toml, the network, or registry/mirrors.toml") from None
        text = aptsig.verify_signed(repo, keys, data, what=f"{repo.base}/Release", signature=sig)
    problems = aptsig.release_problems(text, repo, now or datetime.now(timezone.utc))
    if problems:
        raise LockError(f"{repo.base}: {'; '.join(problems)}", input=where,
                        fix="check suite in platforms.toml; a snapshot archive that never changes is declared frozen = true")
    return text


def load_index(repos: list[AptRepo], arch: str, root: Path, session: Session) -> Index:
    """The merged package index of `repos` for one Debian arch (amd64, arm64); each repository's
    is read once per session."""
    idx = Index(repos=list(repos), arch=arch)
    for repo in repos:
        key = ("apt", repo.model_dump_json(), arch, str(root))
        part = session.remember(key, lambda repo=repo: _load_one(repo, arch, root, session))  # type: ignore[misc]
        for name, byv in part.versions.items():
            for version, raw in byv.items():
                idx.packages.add(name, version, raw, repo)
    idx.provides = provides_map(idx.packages)
    return idx


def _load_one(repo: AptRepo, arch: str, root: Path, session: Session) -> Paragraphs:
    entries = release_entries(verified_release(repo, root, session))
    packages = Paragraphs()
    for rel in _index_files(repo, arch, entries):
        sha, size = entries[rel]
        path = download.fetch(download.Want(url=f"{repo.base}/{rel}", sha256=sha, size=size, label=f"{repo.label} {rel}"),
                              session)
        scan(_decompress(rel, path.read_bytes()).decode("utf-8", "replace"), packages, repo,
             arch if repo.flat else None)
    return packages


def _index_files(repo: AptRepo, arch: str, entries: dict[str, tuple[str, int]]) -> list[str]:
    dirs = [""] if repo.flat else [f"{c}/binary-{arch}/" for c in repo.components]
    out = []
    for d in dirs:
        rel = next((d + f for f in PACKAGES_FILES if d + f in entries), None)
        if rel is None:
            raise LockError(f"the Release of {repo.label} lists no {d}Packages index", input=f"apt:{repo.label}",
                            fix=f"check that the repository carries {arch}" + ("" if repo.flat else " and the components"))
        out.append(rel)
    return out


def _decompress(name: str, data: bytes) -> bytes:
    if name.endswith(".xz"):
        return lzma.decompress(data)
    if name.endswith(".gz"):
        return gzip.decompress(data)
    return data
