"""An accelerator stack made of apt packages: NVIDIA's CUDA, cuDNN and NCCL debs over the OS's
base image, as NVIDIA's own Dockerfiles install them (``FROM ubuntu:18.04`` + pinned packages).

Where every repository and the base image's registry answer, the stack is the dependency
closure of its packages over the stack's repositories and the OS's own, minus what the base
image already has installed (its ``var/lib/dpkg/status``), each .deb pinned by the verified index;
a sha256 upstream published elsewhere (``published``) must be the one the index lists.

Where one of them does not answer (NVIDIA's and Ubuntu's servers are not reachable from every
machine), the lock still records what engines/ says — repository, package, version, and any
published sha256 — as *unpinned* deb inputs (no URL, no size). `lock --check` warns about them,
naming the repository; a build refuses them, saying which lock to run where.
"""

from __future__ import annotations

import gzip
import re
import tarfile

from debian import deb822

from enginefab.core.definition import Input
from enginefab.core.errors import LockError
from enginefab.engines.matrix import Image, Matrix
from enginefab.engines.model import DEB_ARCH, AptRepo
from enginefab.lock import deb
from enginefab.transport.blobs import fetch_base_blob
from enginefab.transport.reach import unreachable
from enginefab.transport.session import Session

STATUS = "var/lib/dpkg/status"


def pending_where(img: Image, repos: list[tuple[str, AptRepo]]) -> str:
    """How an unpinned stack package says where it comes from (stable text: no error detail)."""
    names = "; ".join(f"apt {rid} {r.url}{' /' if r.flat else ' ' + r.suite} (key {r.fingerprints[0][-8:]})"
                      for rid, r in repos)
    return f"{names}; not reachable when locked: run `enginefab lock {img.alias}` where it is"


def deb_origin(i: Input, apt: dict[str, AptRepo]) -> list[str]:
    """Where a deb input comes from: the id of the apt repository of `apt` its URL lies in (or the
    URL itself) when pinned; while unpinned, the ids `pending_where` wrote, any of which may serve it."""
    if i.url:
        repos = sorted(((r.url + "/", rid) for rid, r in apt.items()), reverse=True)  # longest prefix first
        return [next((rid for prefix, rid in repos if i.url.startswith(prefix)), i.url)]
    return re.findall(r"(?:^|; )apt (\S+) ", i.where or "")


def pending_inputs(img: Image, repos: list[tuple[str, AptRepo]], roots: list[str],
                   published: dict[str, str]) -> list[Input]:
    """Packages as engines/ declares them, awaiting a lock that reaches the repositories
    (version `*`: engines/ pins none, the newest at that lock is taken). A sha256 the vendor
    published is pinned already, with its source and trust."""
    where = pending_where(img, repos)
    source = (img.stack.published_source if img.stack else "") or "platforms.toml"
    out = []
    for root in roots:
        name, _, version = root.partition("=")
        sha = published.get(root)
        out.append(Input(kind="deb", name=name, version=version or "*", url=None, sha256=sha, size=0,
                         arch=DEB_ARCH[img.arch], where=where, source=source if sha else None,
                         trust="vendor-published" if sha else None))
    return out


def why_pending(img: Image, repos: list[tuple[str, AptRepo]], base: list[Input], session: Session) -> str | None:
    """Why the stack cannot be resolved from here (None: it can)."""
    if not any(i.media_type and ".layer." in i.media_type for i in base):
        return "the base image's layers were not resolved (its registry is not reachable)"
    for rid, repo in repos:
        why = unreachable(repo.base + "/", session.mirrors)
        if why:
            return f"apt repository {rid}: {why}"
    return None


def installed_in_base(base: list[Input], *, image: str, session: Session) -> set[str]:
    """Names (real and virtual) of the packages the base image has installed: the dpkg status
    of its topmost layer that carries one."""
    text = None
    for inp in base:
        if not (inp.media_type and ".layer." in inp.media_type):
            continue
        path = fetch_base_blob(inp, image=image, session=session)
        opener = gzip.open if "gzip" in inp.media_type else open
        with opener(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|") as tf:  # type: ignore[arg-type]
            for member in tf:
                if member.name.lstrip("./") == STATUS and member.isreg():
                    text = tf.extractfile(member).read().decode("utf-8", "replace")  # type: ignore[union-attr]
    if text is None:
        raise LockError("the base image has no var/lib/dpkg/status: packages cannot be installed over it", image=image,
                        fix="pin a Debian or Ubuntu base image for the OS")
    out: set[str] = set()
    for para in deb822.Packages.iter_paragraphs(text):
        if para.get("Status", "").endswith(" installed"):
            out.add(para["Package"])
            for group in para.relations.get("provides", []):
                out.update(alt["name"] for alt in group)
    return out


def resolve(img: Image, m: Matrix, repos: list[tuple[str, AptRepo]], roots: list[str], *, base: list[Input],
            have: set[str], published: dict[str, str] | None = None, what: str,
            session: Session) -> list[Input]:
    """Deb inputs for `roots` over the base image: pinned when everything answers, else declared
    and unpinned. `published`: name=version → a sha256 upstream published, which the index must match."""
    published = published or {}
    say = session.reporter.info
    why = why_pending(img, repos, base, session)
    if why:
        say(f"[yellow]note:[/] {img.alias}: {what} stay unpinned ({why}); "
            f"`enginefab lock {img.alias}` on a machine that reaches it pins them")
        return pending_inputs(img, repos, roots, published)
    say(f"  {img.alias}: {what} from {', '.join(rid for rid, _ in repos)}")
    key = ("dpkg status", *(i.sha256 or "" for i in base))
    installed = session.remember(key, lambda: installed_in_base(base, image=img.label(), session=session))
    inputs = deb.resolve([r for _, r in repos], img.arch, roots, have | installed, image=img.label(),
                         root=m.root, session=session)
    for i in inputs:
        want = published.get(f"{i.name}={i.version}")
        if want and want != i.sha256:
            raise LockError(f"{i.name} {i.version}: the repository's index gives sha256 {i.sha256}, but "
                            f"{want} was published ({img.stack.published_source if img.stack else 'platforms.toml'})",
                            image=img.label(), input=i.ref,
                            fix="the repository serves other bytes than upstream published: do not use it")
    return inputs
