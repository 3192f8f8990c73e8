"""`enginefab demo`: the README's first command — `release` of the demo images to a local registry."""

from __future__ import annotations

import time
from pathlib import Path

from enginefab.assemble.store import Store
from enginefab.core.settings import Settings
from enginefab.engines.matrix import Image, Matrix, load
from enginefab.publish import registries
from enginefab.release.pipeline import Options, release
from enginefab.transport.session import Session


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


def run_demo(settings: Settings, session: Session, *, port: int, out: Path) -> int:
    t0 = time.monotonic()
    m = load(settings.root)
    reg, _ = registries.start(settings.cache / "registry", port)  # kept running for the user
    session.reporter.info(f"local registry: {reg.host} (Debian's docker-registry, left running; "
                          f"stop: {_cli()} registry stop --port {reg.port})")
    notes = out.parent / "release"
    rel = release(m, demo_images(m), Store(settings.store), out, f"{reg.host}/enginefab", settings, session,
                  Options(plain_http=True, notes_dir=notes))
    if not rel.ok:
        session.reporter.error(f"[red]stopped at {rel.stage}:[/]")
        for p in rel.problems:
            session.reporter.error(f"  [red]✗[/] {p}")
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
