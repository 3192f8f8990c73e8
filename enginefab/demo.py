"""`enginefab demo`: the README's first command — `release` of the demo images to a local registry."""

from __future__ import annotations

import time
from pathlib import Path

from enginefab.assemble.store import Store
from enginefab.core import ui
from enginefab.core.paths import cache_root, default_store, project_root
from enginefab.engines.matrix import Image, Matrix, load
from enginefab.publish import registries
from enginefab.release.pipeline import Options, release


def _cli() -> str:
    """How the user can call enginefab again from here (./dev demo does not put it on PATH)."""
    import os
    import shutil
    import sys

    if shutil.which("enginefab"):
        return "enginefab"
    exe = Path(sys.executable).parent / "enginefab"
    if exe.is_file():
        rel = os.path.relpath(exe)
        return rel if not rel.startswith("..") else str(exe)
    return f"{sys.executable} -m enginefab"


def _kind(artifact_type: str) -> str:
    for key, word in (("spdx", "SBOM"), ("in-toto", "provenance"), ("check.report", "check report")):
        if key in artifact_type:
            return word
    return artifact_type


def demo_images(m: Matrix) -> list[Image]:
    """The demo images (`demo = true`), then the images derived from them (the demo model)."""
    demos = m.demos
    names = {i.alias for i in demos} | {i.name for i in demos}
    return demos + [i for i in m.images if i not in demos and i.parent_alias in names]


def run_demo(*, port: int, out: Path, store: Path | None) -> int:
    t0 = time.monotonic()
    m = load(project_root())
    reg, _ = registries.start(cache_root() / "registry", port)  # kept running for the user
    ui.info(f"local registry: {reg.host} (Debian's docker-registry, left running; "
            f"stop: {_cli()} registry stop --port {reg.port})")
    notes = out.parent / "release"
    rel = release(m, demo_images(m), Store(store or default_store()), out, f"{reg.host}/enginefab",
                  Options(plain_http=True, notes_dir=notes))
    if not rel.ok:
        ui.err.print(f"[red]stopped at {rel.stage}:[/]")
        for p in rel.problems:
            ui.err.print(f"  [red]✗[/] {p}", soft_wrap=True)
        return 1
    print()
    cli = _cli()
    for p in rel.images:
        kinds = ", ".join(_kind(r.get("artifactType", "")) for r in p["referrers"])
        print(f"{p['alias']}  {p['digest']}")
        print(f"    pull: {p['reference']}")
        print(f"    skopeo inspect --tls-verify=false docker://{p['reference']}")
        print(f"    referrers ({kinds}): {cli} referrers {p['reference']} --plain-http")
    for x in rel.indexes:
        print(f"{x['tag']} (multi-arch index)  {x['digest']}")
        print(f"    pull: {x['reference']}")
    uploaded = rel.push_stats.get("uploaded_bytes", 0)
    done = "pushed" if rel.published else "already in the registry (nothing published)"
    print(f"\n{len(rel.images)} images built, checked and {done} in {time.monotonic() - t0:.0f} s "
          f"({uploaded / 1e6:.1f} MB uploaded); OCI layout in {out}/")
    print(f"release notes: {notes}/NOTES.md; release page: {notes}/index.html")
    return 0
