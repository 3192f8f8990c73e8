"""`enginefab push`: the chosen images to REGISTRY/PREFIX/<engine>, tagged with the canonical name
and the alias."""

from __future__ import annotations



from enginefab import ui
from enginefab.build.builder import Builder
from enginefab.build.store import Store
from enginefab.engines.matrix import Image, Matrix
from enginefab.errors import RegistryError
from enginefab.registry.client import RegistryClient
from enginefab.registry.push import BlobHome, PushStats, push_image


def split_target(to: str) -> tuple[str, str]:
    host, _, prefix = to.strip("/").partition("/")
    if not host:
        raise RegistryError(f"{to!r} is not REGISTRY[/PREFIX]", fix="for example 127.0.0.1:5000/enginefab")
    return host, prefix


def repository_for(prefix: str, img: Image) -> str:
    return f"{prefix}/{img.engine.name}" if prefix else img.engine.name


def publish(m: Matrix, imgs: list[Image], store: Store, to: str, *, plain_http: bool = False,
            ca_cert: str | None = None, parallel: int = 4) -> dict:
    from enginefab.build.pipeline import definition_for

    host, prefix = split_target(to)
    client = RegistryClient(host, plain_http=plain_http, ca_cert=ca_cert)
    client.check_login()
    builder = Builder(store)
    stats = PushStats()
    home = BlobHome()
    pushed = []
    for img in imgs:
        built = builder.image(definition_for(m, img))  # a cache hit when already built
        repo = repository_for(prefix, img)
        ui.info(f"[bold]push[/] {img.alias} → {host}/{repo}")
        with ui.bytes_progress(img.alias, None) as bar:
            p = push_image(client, store, repo, built.manifest, [img.name, img.alias], stats, home,
                           parallel=parallel, progress=bar.advance)
        pushed.append({"alias": img.alias, "name": img.name, "repository": repo, "digest": p.digest,
                       "reference": f"{host}/{repo}:{img.name}", "by_digest": p.reference})
    return {"images": pushed,
            "stats": {k: getattr(stats, k) for k in ("blobs", "uploaded_blobs", "uploaded_bytes", "mounted", "skipped")}}


