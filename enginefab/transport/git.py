"""A `git` input: a repository, a commit and its tree, made into a source archive whose bytes are a
function of the tree alone (so its sha256 is stable, unlike a forge's generated tarballs).

How: the commit is fetched into a fresh bare repository (git itself, over https, http or file
only; objects checked with `transfer.fsckObjects`, no hooks, no user or system config), the
commit's tree is compared with the pinned tree, and the archive is written from `git ls-tree`
and `git cat-file --batch`: a plain tar (no compression, so no zlib version in the bytes),
entries sorted by path with parents first, mtime 0, owner 0:0 with empty names, modes 0644/0755
for files and 0755 for directories, symlinks as symlinks. Refused, naming the path: a path
component that is empty, `.`, `..` or `.git`; a symlink that is absolute or leaves the tree; a
submodule (its files are not in the tree: pin that repository as a git input of its own).
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import re
import subprocess
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from enginefab.core.errors import FetchError, PinMismatch, UnsafeArchiveError
from enginefab.transport.landing import landing, scratch_dir
from enginefab.transport.mirrors import Mirrors

#: bump when the archive bytes made from the same tree would change
ARCHIVE_FORMAT = "enginefab-git-tar/1"
ALLOWED_PROTOCOLS = ("https", "http", "file")
BLOCK = 512
TIMEOUT = 900  # seconds for one git command (a fetch of a large repository)

_OID = re.compile(r"^[0-9a-f]{40}$")
_MODES = {"100644": 0o644, "100664": 0o644, "100755": 0o755}


@dataclass(frozen=True)
class GitPin:
    url: str
    commit: str
    tree: str
    prefix: str = ""  # top directory in the archive ("" or "name-version")
    label: str = ""  # input name for messages
    image: str | None = None


@dataclass(frozen=True)
class Archive:
    path: Path
    sha256: str
    size: int


def _env(home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LC_ALL": "C",
        "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0",
        "GIT_ALLOW_PROTOCOL": ":".join(ALLOWED_PROTOCOLS), "GIT_ASKPASS": "/bin/false", "SSH_ASKPASS": "/bin/false",
    }


def _git(pin: GitPin, repo: Path, *args: str, stdin: bytes | None = None, redact: str = "") -> bytes:
    """Run git in `repo`; its errors name `pin.url` (never `redact`, a mirror's URL that may hold a token)."""
    cmd = ["git", "-C", str(repo), "-c", "transfer.fsckObjects=true", "-c", "core.hooksPath=/dev/null",
           "-c", "protocol.version=2", *args]
    try:
        p = subprocess.run(cmd, input=stdin, capture_output=True, env=_env(repo), timeout=TIMEOUT)
    except FileNotFoundError:
        raise FetchError("git is not installed", image=pin.image, input=pin.label or None,
                         fix="apt-get install git (./dev setup installs it)") from None
    except subprocess.TimeoutExpired:
        raise FetchError(f"git {args[0]} of {pin.url} took more than {TIMEOUT} s", image=pin.image,
                         input=pin.label or None, fix="check the network, or mirror the repository (registry/mirrors.toml)") from None
    stderr = p.stderr.decode(errors="replace").replace(redact, pin.url) if redact else p.stderr.decode(errors="replace")
    if p.returncode != 0 and "fsck error" in stderr:
        found = [ln for ln in stderr.splitlines() if ln.startswith("error: object")]
        raise UnsafeArchiveError(f"{pin.url} serves objects git's fsck refuses: {'; '.join(found)[:300] or 'fsck error'}",
                                 image=pin.image, input=pin.label or None,
                                 fix="the repository is hostile or corrupt: pin another commit or repository")
    if p.returncode != 0:
        raise FetchError(f"git {args[0]} failed for {pin.url}: {stderr.strip()[-400:]}",
                         image=pin.image, input=pin.label or None,
                         fix="check the URL and that the commit exists there, or mirror the repository (registry/mirrors.toml)")
    return p.stdout


def check_url(url: str) -> str | None:
    """Why `url` is not a repository address we fetch from (None: it is)."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in ALLOWED_PROTOCOLS:
        return f"{url!r}: a git input's url is https://, http:// or file:// (other transports can run commands)"
    if "@" in url.split("://", 1)[1].split("/", 1)[0]:
        return "a git input's url holds credentials (user@ or user:password@): they would be printed and stored"
    return None


def _without_userinfo(url: str) -> str:
    scheme, _, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme}://{host.rsplit('@', 1)[-1]}{slash}{path}"


def fetch_commit(pin: GitPin, repo: Path, mirrors: Mirrors) -> None:
    """Into the bare repository `repo`: the pinned commit (through `mirrors`), its tree compared with the pin."""
    url = mirrors.url(pin.url)  # a mirror's URL may hold credentials; the pin's may not
    why = check_url(pin.url) or check_url(_without_userinfo(url))
    if why:
        raise FetchError(why, image=pin.image, input=pin.label or None, fix="use an https:// (or file://) URL")
    _git(pin, repo, "init", "--quiet", "--bare")
    try:
        _git(pin, repo, "fetch", "--quiet", "--no-tags", "--depth=1", url, pin.commit, redact=url)
    except UnsafeArchiveError:
        raise
    except FetchError:  # a server that does not serve a commit by id: every branch and tag, then look
        _git(pin, repo, "fetch", "--quiet", "--tags", url, "+refs/heads/*:refs/remotes/origin/*", redact=url)
    try:
        body = _git(pin, repo, "cat-file", "commit", pin.commit)
    except FetchError:
        raise FetchError(f"{pin.url} has no commit {pin.commit}", image=pin.image, input=pin.label or None,
                         fix="check the commit in engines/ (the tag's commit, `git rev-parse TAG^{commit}`)") from None
    first = body.split(b"\n", 1)[0].decode(errors="replace")
    tree = first[5:] if first.startswith("tree ") else ""
    if tree != pin.tree:
        raise PinMismatch(f"commit {pin.commit} of {pin.url} has tree {tree or '?'}, the pin says {pin.tree}",
                         image=pin.image, input=pin.label or None,
                         fix="the repository's content is not the pinned one: check `tree` in engines/ "
                         "(`git rev-parse COMMIT^{tree}`) and review why it differs")


@dataclass(frozen=True)
class _Entry:
    mode: str
    kind: str
    oid: str
    path: str


def _entries(pin: GitPin, repo: Path) -> list[_Entry]:
    out = []
    for rec in _git(pin, repo, "ls-tree", "-r", "-z", "--full-tree", pin.tree).split(b"\0"):
        if not rec:
            continue
        meta, _, path = rec.partition(b"\t")
        mode, kind, oid = meta.decode().split(" ")
        out.append(_Entry(mode, kind, oid, path.decode("utf-8", "surrogateescape")))
    return out


def _refuse(pin: GitPin, path: str, why: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"{pin.url} at {pin.commit[:12]}: {path!r} {why}", image=pin.image,
                              input=pin.label or None, fix="the repository is not safe to build from: pin another commit")


def _safe(pin: GitPin, e: _Entry) -> None:
    parts = e.path.split("/")
    if any(p in ("", ".", "..") or p.lower() == ".git" for p in parts):
        raise _refuse(pin, e.path, "has a path component that is empty, '.', '..' or '.git'")
    if e.kind == "commit" or e.mode == "160000":
        raise _refuse(pin, e.path, "is a submodule: its files are not in this tree (pin its repository as a git input of its own)")
    if e.mode != "120000" and e.mode not in _MODES:
        raise _refuse(pin, e.path, f"has a mode git does not write ({e.mode})")


def _resolve(parts: list[str], links: dict[str, str], depth: int = 0) -> list[str] | None:
    """`parts` resolved through the tree's symlinks, component by component (None: it leaves
    the tree, or the links loop). Lexical normalisation alone is not enough: `a -> b/..` stays
    inside only if `b` is not itself a link that goes up."""
    out: list[str] = []
    for comp in parts:
        if comp in ("", "."):
            continue
        if comp == "..":
            if not out:
                return None
            out.pop()
            continue
        out.append(comp)
        target = links.get("/".join(out))
        if target is not None:
            if depth > 40 or target.startswith("/"):
                return None
            r = _resolve(out[:-1] + target.split("/"), links, depth + 1)
            if r is None:
                return None
            out = r
    return out


def _link_targets(pin: GitPin, repo: Path, entries: list[_Entry]) -> dict[str, str]:
    """Every symlink's target, refused when one is absolute, empty or leads out of the tree."""
    links = [e for e in entries if e.mode == "120000"]
    targets = {e.path: b.decode("utf-8", "surrogateescape") for e, b in zip(links, _blobs(pin, repo, [e.oid for e in links]))}
    for path, t in targets.items():
        if not t or "\0" in t or t.startswith("/") or _resolve(path.split("/")[:-1] + t.split("/"), targets) is None:
            raise _refuse(pin, path, f"is a symlink to {t!r}, outside the tree")
    return targets


def _blobs(pin: GitPin, repo: Path, oids: list[str]) -> Iterator[bytes]:
    """The contents of `oids`, in order, streamed from one `git cat-file --batch` (one blob in
    memory at a time)."""
    cmd = ["git", "-C", str(repo), "cat-file", "--batch"]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_env(repo))
    assert p.stdin is not None and p.stdout is not None
    feeder = threading.Thread(target=_feed, args=(p.stdin, oids), daemon=True)
    feeder.start()
    try:
        for oid in oids:
            header = p.stdout.readline().split(b" ")
            if len(header) != 3 or header[0].decode(errors="replace") != oid or header[1] != b"blob":
                raise FetchError(f"git cat-file gave {b' '.join(header)[:80]!r} for blob {oid}", image=pin.image,
                                 input=pin.label or None)
            size = int(header[2])
            body = p.stdout.read(size)
            p.stdout.read(1)
            yield body
    finally:
        p.kill()
        p.wait()
        feeder.join()


def _feed(stdin, oids: list[str]) -> None:
    try:
        for o in oids:
            stdin.write(o.encode() + b"\n")
        stdin.close()
    except (BrokenPipeError, ValueError):
        pass


def _info(name: str, kind: bytes, mode: int, size: int = 0, target: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.size, ti.linkname = kind, mode, size, target
    ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0, 0, "", ""
    return ti


def write_archive(pin: GitPin, repo: Path, out: io.BufferedIOBase) -> None:
    """The tree as a tar (the module docstring lists what is refused and how bytes are fixed)."""
    entries = sorted(_entries(pin, repo), key=lambda e: e.path.encode("utf-8", "surrogateescape"))
    for e in entries:
        _safe(pin, e)
    targets = _link_targets(pin, repo, entries)
    seen: set[str] = set()
    for e in entries:
        parts = e.path.split("/")
        under = next(("/".join(parts[:n]) for n in range(1, len(parts)) if "/".join(parts[:n]) in targets), None)
        if under or e.path in seen:
            raise _refuse(pin, e.path, f"is listed under the symlink {under!r}" if under else "is listed twice")
        seen.add(e.path)
    prefix = pin.prefix.strip("/")
    if prefix and (prefix in (".", "..") or "/" in prefix or prefix.lower() == ".git"):
        raise _refuse(pin, prefix, "is not a directory name for the archive's top directory")
    dirs: set[str] = set()
    if prefix:
        _put(out, _info(prefix + "/", tarfile.DIRTYPE, 0o755))
    files = [e for e in entries if e.mode != "120000"]
    bodies = _blobs(pin, repo, [e.oid for e in files])
    for e in entries:
        parts = e.path.split("/")
        for n in range(1, len(parts)):
            d = "/".join(parts[:n])
            if d not in dirs:
                dirs.add(d)
                _put(out, _info(posixpath.join(prefix, d) + "/", tarfile.DIRTYPE, 0o755))
        name = posixpath.join(prefix, e.path)
        if e.mode == "120000":
            _put(out, _info(name, tarfile.SYMTYPE, 0o777, target=targets[e.path]))
        else:
            body = next(bodies)
            _put(out, _info(name, tarfile.REGTYPE, _MODES[e.mode], len(body)), body)
    out.write(b"\0" * (2 * BLOCK))


def _put(out: io.BufferedIOBase, ti: tarfile.TarInfo, body: bytes = b"") -> None:
    """One entry: its header (PAX only where ustar cannot hold a field, as layer tars), its bytes."""
    out.write(ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
    if body:
        out.write(body)
        out.write(b"\0" * ((-len(body)) % BLOCK))


def archive(pin: GitPin, sha256: str | None = None, *, cache: Path, mirrors: Mirrors = Mirrors()) -> Archive:
    """The archive of `pin` in the download cache `cache` (made when it lacks it, fetched through
    `mirrors`): the tree verified, then, when `sha256` is given, the archive's bytes too."""
    for what, oid in (("commit", pin.commit), ("tree", pin.tree)):
        if not _OID.match(oid):
            raise FetchError(f"{what} {oid!r} is not a git object id (40 lowercase hex)", image=pin.image,
                             input=pin.label or None, fix="pin the full commit and tree ids in engines/")
    root = cache / "sha256"
    if sha256 and (root / sha256).is_file():
        p = root / sha256
        return Archive(p, sha256, p.stat().st_size)
    root.mkdir(parents=True, exist_ok=True)
    with scratch_dir(root.parent, "git") as tmp:
        repo = tmp / "repo.git"
        repo.mkdir()
        fetch_commit(pin, repo, mirrors)
        with landing(root, mode=0o444) as out:
            h = _Hashing(out.file)
            write_archive(pin, repo, h)  # type: ignore[arg-type]
            got = h.sha.hexdigest()
            if sha256 and got != sha256:
                raise PinMismatch(f"the archive of {pin.url} at tree {pin.tree[:12]} has sha256 {got}, the pin says {sha256}",
                                 image=pin.image, input=pin.label or None,
                                 fix=f"the tree is verified, so the archiver differs ({ARCHIVE_FORMAT}) or the pin is wrong: "
                                 "check `sha256` in engines/")
            return Archive(out.commit(root / got), got, h.size)


class _Hashing(io.RawIOBase):
    """A write-only file that hashes what it passes on."""

    def __init__(self, f) -> None:
        self.f, self.sha, self.size = f, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        self.sha.update(b)
        self.size += len(b)
        self.f.write(b)
        return len(b)
