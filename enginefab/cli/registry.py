"""`enginefab registry`: local docker-registry instances on 127.0.0.1 (start, list, stop)."""

from __future__ import annotations

from typing import Annotated

import typer

from enginefab.cli import args, present
from enginefab.cli.app import JsonOpt, PortOpt, run_guarded


group = typer.Typer(help="A local OCI registry (Debian's docker-registry) on 127.0.0.1.",
                    no_args_is_help=True, rich_markup_mode=None, add_completion=False)


@group.command("start")
@run_guarded
def start(port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000, as_json: JsonOpt = False) -> None:
    """Start docker-registry on 127.0.0.1:PORT in the background; prints HOST:PORT. Idempotent per
    port; several ports run side by side. A port another program holds is an error naming it."""
    from enginefab.publish import registries

    r, started = registries.start(args.registry_state(), port)
    if as_json:
        present.emit({**r.as_dict(), "started": started})
    else:
        print(r.host)
        present.info(f"{'started' if started else 'already running:'} docker-registry pid {r.pid}, data in {r.root}")


@group.command("list")
@run_guarded
def list_(as_json: JsonOpt = False) -> None:
    """The registries `registry start` left running: host, pid, state directory."""
    from enginefab.publish import registries

    up = registries.running(args.registry_state())
    if as_json:
        present.emit([r.as_dict() for r in up])
        return
    present.say(f"{r.host}  pid {r.pid}  {r.root}" for r in up)
    if not up:
        present.info("no registry running")


@group.command("stop")
@run_guarded
def stop(port: PortOpt = None,
         all_: Annotated[bool, typer.Option("--all", help="Every registry `registry start` left running.")] = False,
         as_json: JsonOpt = False) -> None:
    """Stop a registry `registry start` left running (the only one, --port N, or --all); data is kept."""
    from enginefab.publish import registries

    chosen = registries.choose(args.registry_state(), port, all_)
    for r in chosen:
        registries.stop(r)
        present.info(f"stopped the registry on {r.host}")
    if as_json:
        present.emit([r.as_dict() for r in chosen])
    elif not chosen:
        present.info("no registry running")
