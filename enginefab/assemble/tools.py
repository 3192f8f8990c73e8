"""Build-only inputs of a run layer (its `tools`): there while the steps run, absent from the layer.

Multi-stage semantics without a second image: the tools (Debian packages — a compiler, headers —
and wheels — pip, setuptools, cmake) are staged under the same archive rules as any layer
(`stage_deb`, `stage_wheel`: no member outside the root, no device nodes, setuid bits cleared,
no whiteout names), packed to a tar and applied over the step's root after the *before*
snapshot, so the steps see one tree. A second snapshot (*tooled*) records what the tools made.
`without_tools` then takes the tools back out of the *after* snapshot: a path the tools added or
replaced and the steps left exactly as the tools made it is not the step's work — it is absent
(added by the tools) or the image's own (replaced by them). Only what the steps wrote themselves
becomes the layer; a file a step changes or creates counts as its work wherever it lives.

Wheels go to the image Python's own scheme (site-packages, scripts), with its interpreter in their
console scripts, so `python3 -m pip` and `cmake` work as they would after a `pip install`; the
lock pins tool wheels at the versions the image already has wherever both hold one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from enginefab.assemble import rootfs
from enginefab.assemble.debs import stage_deb
from enginefab.assemble.staging import Staging
from enginefab.assemble.tarball import tar_entries
from enginefab.assemble.wheels import stage_wheel
from enginefab.core.definition import Definition, Input
from enginefab.core.errors import BuildError
from enginefab.core.pytarget import scheme_for

TAR = "application/vnd.oci.image.layer.v1.tar"


def apply_tools(builder, defn: Definition, tools: list[Input], root: Path, work: Path) -> None:
    """Fetch `tools`, stage them under the archive rules and apply them over `root`."""
    image = defn.image.alias
    st = Staging(work / "tools", limits=builder.limits)
    st.root.mkdir()
    py = defn.python
    scheme = scheme_for(py.site_packages, py.scripts, py.version)
    for inp in builder.order(sorted(tools, key=lambda i: (i.kind, i.name))):
        path = builder.fetch_input(inp, image)
        if inp.kind == "deb":
            stage_deb(st, path, inp)
        elif inp.kind == "wheel":
            stage_wheel(st, path, inp, scheme, py.interpreter)
        else:
            raise BuildError(f"build tool {inp.ref}: only Debian packages and wheels can be tools", image=image,
                             input=inp.ref, fix="make it a file input of the layer ([[image.files]]) instead")
    builder.stats.notes.extend(st.notes)
    tar = work / "tools.tar"
    with open(tar, "wb") as f:
        for chunk in tar_entries(st, defn.source_date_epoch):
            f.write(chunk)
    shutil.rmtree(st.root)
    rootfs.apply_layer(root, tar, TAR)
    tar.unlink()


def without_tools(before: dict, tooled: dict, after: dict) -> dict:
    """`after` with the tools taken back out (pure): every path the tools added or replaced
    (`tooled` differs from `before`) that the steps left as the tools made it is the image's
    own again, or absent when the tools added it."""
    out = dict(after)
    for rel, made in tooled.items():
        was = before.get(rel)
        if was is not None and was.same_as(made):
            continue  # the tools did not touch it
        now = after.get(rel)
        if now is None or not now.same_as(made):
            continue  # the step deleted or rewrote it: its own work
        if was is None:
            del out[rel]
        else:
            out[rel] = was
    return out
