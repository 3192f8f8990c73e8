"""The typer application: its table of commands, the options several commands share, and
`run_guarded`, which turns an error a user can act on into one paragraph and exit 2.

Errors a user can act on print as one paragraph (what, which image and input, the fix) and exit
2; failing checks exit 1. `--json` prints machine-readable results on stdout and keeps progress
and messages on stderr. Start-up stays cheap: this module and the command modules import typer
and the error type only; every stage (and rich, pydantic) is imported inside the command that
needs it, and only the command that runs is built (cli/lazy.py).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Optional

import typer

from enginefab.cli.lazy import LazyGroup
from enginefab.core.errors import EnginefabError, storage_error

class Root(LazyGroup):
    #: every command, in the order --help lists them: "module:function" (a command) or
    #: "module:group" (a typer.Typer of sub-commands) under enginefab.cli
    COMMANDS = {
        "list": "inspect:list_", "show": "inspect:show", "schema": "inspect:schema", "lock": "lock:lock",
        "build": "build:build", "plan": "inspect:plan", "diff": "inspect:diff", "validate": "inspect:validate",
        "check": "check:check", "push": "publish:push", "pull": "publish:pull", "referrers": "publish:referrers",
        "init": "project:init", "doctor": "doctor:doctor", "release": "release:release", "report": "release:report",
        "demo": "release:demo",
        "store": "store:group", "registry": "registry:group", "nix": "nix:group", "render": "render:group",
    }


app = typer.Typer(
    name="enginefab",
    cls=Root,
    help="Reproducible, matrix-planned OCI images for AI training engines.\n\n"
    "engines/ (typed matrix) → lock → build/ (pinned definitions) → build → check → push.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts hold literal brackets ([:PORT], [/VARIANT]), not markup
    add_completion=False,
)


@app.callback()
def _setup() -> None:
    """Reproducible, matrix-planned OCI images for AI training engines."""
    from enginefab.cli import args
    from enginefab.core import debuglog

    args.begin()
    try:
        log = args.settings().debug_log
    except EnginefabError:
        return  # a malformed ENGINEFAB_* variable: the command says so (exit 2)
    debuglog.setup(log)


JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
NamesArg = Annotated[Optional[list[str]], typer.Argument(help="Image aliases or canonical names.", show_default=False)]
AllOpt = Annotated[bool, typer.Option("--all", help="Every image in the matrix.")]
DemoOpt = Annotated[bool, typer.Option("--demo", help="The demo images (every input reachable from PyPI and Debian).")]
StoreOpt = Annotated[Optional[Path], typer.Option("--store", help="Store directory [default: ~/.cache/enginefab/store].")]
ToOpt = Annotated[str, typer.Option("--to", help="REGISTRY[:PORT]/PREFIX (e.g. 127.0.0.1:5000/enginefab), or a target "
                                    "named in registry/targets.toml.")]
PlainOpt = Annotated[bool, typer.Option("--plain-http", help="Talk HTTP, not HTTPS.")]
CaOpt = Annotated[Optional[Path], typer.Option("--ca-cert", help="CA certificate to verify the registry's TLS.")]
CacheOpt = Annotated[Optional[str], typer.Option(
    "--cache", help="A shared action cache in a registry, HOST[:PORT]/PREFIX (e.g. one for all CI runners): layers "
    "missing from the store are pulled from it (each verified), layers packed here are written to it; a cache that "
    "is down only slows the build. Credentials as for push.")]
RefArg = Annotated[str, typer.Argument(help="HOST[:PORT]/REPOSITORY[:TAG][@sha256:…]")]
PlatformOpt = Annotated[Optional[str], typer.Option("--platform", help="OS/ARCH[/VARIANT] to pick from a multi-arch index, e.g. linux/arm64.")]
PortOpt = Annotated[Optional[int], typer.Option("--port", help="Port on 127.0.0.1.", show_default=False)]
AliasArg = Annotated[str, typer.Argument(help="Alias or canonical name.")]


def _fail(e: EnginefabError, as_json: bool) -> None:
    from enginefab.cli import present

    present.error(e, as_json)
    raise typer.Exit(2)


def _outside_value(e: Exception) -> EnginefabError:
    """A pydantic ValidationError (a value from outside no model accepts) as the error a user reads."""
    from enginefab.core.fields import rule_of

    first = e.errors()[0]  # type: ignore[attr-defined]
    where = ".".join(str(x) for x in first["loc"])
    return EnginefabError(f"{e.title}: field {where}: {rule_of(first)}",  # type: ignore[attr-defined]
                          fix="the value came from outside (a definition, an index or a registry): "
                              "correct it there, or report it if it came from upstream")


def run_guarded(fn):
    """Decorator: EnginefabError → clean message and exit 2."""

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        as_json = bool(kw.get("as_json"))
        if as_json:
            from enginefab.cli import args

            args.json_output(True)
        try:
            return fn(*a, **kw)
        except EnginefabError as e:
            _fail(e, as_json)
        except OSError as e:  # a read-only or full filesystem: a message naming the path, no traceback
            err = storage_error(e)
            if err is None:
                raise
            _fail(err, as_json)
        except KeyboardInterrupt:
            from enginefab.cli.present import console

            console().print("[red]interrupted[/]")
            raise typer.Exit(130)
        except Exception as e:
            from pydantic import ValidationError  # only once something failed: pydantic is slow to import

            if not isinstance(e, ValidationError):
                raise
            _fail(_outside_value(e), as_json)

    return wrapper
