"""Pinning a run step's build-only inputs (``[[image.run]] tools = {debs, requirements}``).

Tools are resolved by the same resolvers and trust rules as the image's own packages:

* ``debs``: the closure over the image's apt repository (a signed index, pinned keys), less
  what the image already holds (its OS, Python, stack and extra packages: the step sees those);
* ``requirements`` (with ``constraints``): uv for the versions for the *image's* Python and
  platform, as of the image's PyPI instant, every distribution the image itself installs pinned
  to its version (a tool never sees another NumPy than the image has); then the index's wheel by
  sha256. A tool needs a wheel: nothing builds the build tools. What the image already holds
  (same version) is not a tool again.

The tools of every step of the image's run layer are one list (the layer's `tools`): the steps
of a layer share one root, so what one sees the next sees too.
"""

from __future__ import annotations

from rich.markup import escape

from enginefab.core.definition import Input
from enginefab.core.errors import LockError
from enginefab.core.pytarget import Target
from enginefab.engines.matrix import Image, Matrix
from enginefab.lock import deb, pypi, stackdebs
from enginefab.lock.asof import as_of
from enginefab.transport.session import Session


def wanted(img: Image) -> tuple[list[str], list[str], list[str]]:
    """(debs, requirements, constraints) the image's run steps ask for, each once, in order."""
    debs: list[str] = []
    reqs: list[str] = []
    cons: list[str] = []
    owned = [(f"stack {img.stack_id}", s) for s in (img.stack.run if img.stack else [])]
    owned += [(f"Python {img.python_id}", s) for s in img.python.run]
    for owner, s in owned:
        if s.tools is not None:
            raise LockError(f"run step {s.name} of {owner} has tools: only an image's own steps "
                            "([[image.run]]) take them", image=img.label(), input=f"run:{s.name}",
                            fix="move the build into a [[image.run]] step of the image, or install the tools "
                            "in the step itself")
    for step in img.d.run:
        t = step.tools
        if t is None:
            continue
        debs += [d for d in t.debs if d not in debs]
        reqs += [r for r in t.requirements if r not in reqs]
        cons += [c for c in t.constraints if c not in cons]
    return debs, reqs, cons


def resolve(img: Image, m: Matrix, session: Session, *, base: list[Input], have: set[str],
            held: dict[str, str]) -> list[Input]:
    """The pinned tools of `img`'s run steps (through the session's indexes); `have`: the deb
    names the image provides, `held`: the Python distributions it installs (name → version)."""
    say = session.reporter.info
    debs, reqs, cons = wanted(img)
    out: list[Input] = []
    who = img.label()
    if debs:
        say(f"  {img.alias}: build tools {', '.join(debs)} (Debian packages, not in the image)")
        out += _debs(img, m, debs, base=base, have=have, session=session)
    if reqs:
        target = Target(python=img.d.python, arch=img.arch, glibc=img.os.glibc)
        when = as_of(img, m.platforms.pypi)
        say(escape(f"  {img.alias}: build tools {', '.join(reqs)} (wheels, not in the image; PyPI as of "
                   f"{when.instant or 'now'})"))
        same = [f"{n}=={v}" for n, v in sorted(held.items())]
        pins = pypi.resolve_versions(reqs, cons + same, target, image=who, session=session,
                                     exclude_newer=when.instant)
        for pin in [p for p in pins if held.get(p.name) != p.version]:  # the image's own are there
            f = pypi.select_file(pin, target, session, image=who)
            if f.kind != "wheel":
                raise LockError(f"build tool {pin.name} {pin.version} has no wheel for Python {img.d.python} on "
                                f"{img.arch}, only the sdist: build tools are not built from source",
                                image=who, input=f"{pin.name}=={pin.version}",
                                fix="pin a version with a wheel in the step's tools.constraints, or install it "
                                "from its sdist in a step of its own")
            out.append(f)
    return out


def _debs(img: Image, m: Matrix, roots: list[str], *, base: list[Input], have: set[str],
          session: Session) -> list[Input]:
    apt = m.platforms.apt.get(img.os.apt) if img.os.apt else None
    if apt is None:
        raise LockError(f"field run.tools.debs: {img.os_id} has no apt repository this lock can read", image=img.label(),
                        fix="use tools.requirements (wheels), or an OS with an apt repository")
    if img.os.source == "oci":  # over a base image: what it has installed is there already
        return stackdebs.resolve(img, m, [(img.os.apt, apt)], roots, base=base, have=have,
                                 what="build tools (Debian packages)", session=session)
    return deb.resolve([apt], img.arch, roots, have, image=img.label(), root=m.root, session=session)
