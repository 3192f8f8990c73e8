"""Commands that talk to a registry: push built images, pull an image, list its referrers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from enginefab.cli import args, present
from enginefab.cli.app import (AllOpt, CaOpt, DemoOpt, JsonOpt, NamesArg, PlainOpt, PlatformOpt, RefArg, StoreOpt,
                               ToOpt, run_guarded)


@run_guarded
def push(
    names: NamesArg = None,
    all_: AllOpt = False,
    demo: DemoOpt = False,
    to: ToOpt = "",
    plain_http: PlainOpt = False,
    ca_cert: CaOpt = None,
    store: StoreOpt = None,
    parallel: Annotated[int, typer.Option(help="Parallel blob uploads.")] = 4,
    referrers: Annotated[bool, typer.Option("--referrers/--no-referrers", help="Attach SBOM and provenance (and the check report) as referrers.")] = True,
    index: Annotated[bool, typer.Option("--index/--no-index", help="Push a multi-arch index where one engine version is pushed for several arches.")] = True,
    reports: Annotated[Optional[Path], typer.Option("--reports", help="Attach the check reports `enginefab check --reports DIR` wrote.")] = None,
    run_check: Annotated[bool, typer.Option("--check", help="Run the checks now and attach their reports.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Push built images to an OCI registry: tags are the canonical name and the alias; a multi-arch
    index is tagged with the canonical name minus accelerator and arch. Credentials come from
    ENGINEFAB_REGISTRY_USER / ENGINEFAB_REGISTRY_PASSWORD or the docker config."""
    from enginefab.release.pipeline import push as do_push

    m = args.matrix()
    imgs = args.pick(m, names, all_, demo)
    args.require_target(to)
    result = do_push(m, imgs, args.store(store), to, args.settings(), args.session(), plain_http=plain_http,
                     ca_cert=str(ca_cert) if ca_cert else None, parallel=parallel, referrers=referrers, indexes=index,
                     reports=reports, run_check=run_check)
    if as_json:
        present.emit(result)
        return
    present.pushed(result["images"], result["indexes"])
    present.push_stats(result["stats"])


@run_guarded
def pull(
    ref: RefArg,
    out: Annotated[Path, typer.Option("--out", help="OCI image layout to write into (created if needed).")],
    platform: PlatformOpt = None,
    plain_http: PlainOpt = False,
    ca_cert: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Pull an image or a multi-arch index into an OCI layout, verifying every blob's digest."""
    from enginefab.publish.pull import pull as do_pull

    r, client = args.client_for(ref, plain_http, ca_cert)
    client.check_login()
    with args.reporter().progress("pull", None) as bar:
        res = do_pull(client, r, out, platform=platform, progress=bar.advance)
    if as_json:
        present.emit(res.as_dict())
    else:
        present.pulled(res, out)


@run_guarded
def referrers(
    ref: RefArg,
    platform: PlatformOpt = None,
    artifact_type: Annotated[Optional[str], typer.Option("--artifact-type", help="Only referrers of this type.")] = None,
    plain_http: PlainOpt = False,
    ca_cert: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List what is attached to an image (SBOM, provenance, check report): the registry's referrers
    API, or the `sha256-<hex>` fallback tag on registries without it."""
    from enginefab.publish.referrers import list_referrers, resolve_subject

    r, client = args.client_for(ref, plain_http, ca_cert)
    client.check_login()
    digest = resolve_subject(client, r, platform)
    descs, how = list_referrers(client, r.repository, digest, artifact_type)
    if as_json:
        present.emit({"subject": digest, "source": how, "referrers": descs})
    else:
        present.referrers(f"{r.registry}/{r.repository}@{digest}", descs, how)
