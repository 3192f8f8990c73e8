"""`enginefab demo`: the README's first command — the whole pipeline on the demo images."""

from __future__ import annotations

import time
from pathlib import Path

from enginefab import ui
from enginefab.errors import EnginefabError


def run_demo(*, port: int, out: Path, store: Path | None) -> int:
    from enginefab.build.pipeline import build_images
    from enginefab.build.store import Store
    from enginefab.check.runner import run_checks
    from enginefab.engines.matrix import load
    from enginefab.lock import check as lock_check
    from enginefab.paths import cache_root, default_store, project_root
    from enginefab.registry.publish import publish
    from enginefab.registry.server import Registry, running

    t0 = time.monotonic()
    m = load(project_root())
    imgs = m.demos
    ui.info(f"[bold]1/4 lock --check[/]: {len(m.images)} images in the matrix, {len(imgs)} demos")
    problems, _ = lock_check.check(m)
    if problems:
        for p in problems:
            ui.err.print(f"[red]stale:[/] {p}")
        return 1
    st = Store(store or default_store())
    ui.info(f"[bold]2/4 build[/] into {out} (store {st.root})")
    results = build_images(m, imgs, st, out)
    ui.info("[bold]3/4 check[/] (definition, static, runtime, accelerator)")
    reports = run_checks(m, imgs, st)
    failed = [r for r in reports if not r.ok]
    for r in reports:
        c = r.counts()
        ui.err.print(f"  {r.image}: {c['pass']} passed, {c['fail']} failed, {c['error']} errors, {c['skip']} skipped")
        for res in r.results:
            if res.status in ("fail", "error"):
                ui.err.print(f"    [red]{res.level} {res.name}[/]: {res.detail}")
    if failed:
        return 1
    state = cache_root() / "registry"
    reg = running(state)
    if reg is None:
        reg = Registry(root=state, port=port).start()
        reg.proc = None  # keep it running for the user
    ui.info(f"[bold]4/4 push[/] to {reg.host} (docker-registry, left running; stop: enginefab registry stop)")
    try:
        pushed = publish(m, imgs, st, f"{reg.host}/enginefab", plain_http=True)
    except EnginefabError:
        raise
    print()
    for r, p in zip(results, pushed["images"]):
        print(f"{p['alias']}  {p['digest']}")
        print(f"    pull: {p['reference']}")
        print(f"    skopeo inspect --tls-verify=false docker://{p['reference']}")
    s = pushed["stats"]
    print(f"\n{len(imgs)} images built, checked and pushed in {time.monotonic() - t0:.0f} s "
          f"({s['uploaded_bytes'] / 1e6:.1f} MB uploaded); OCI layout in {out}/")
    return 0
