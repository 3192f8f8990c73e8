"""The root command group, lazy: a command's options are built (typer reads its signature and
type hints) only when that command runs or shows its own help, and the root's `--help` lists the
commands from their docstrings. Building all 28 commands for every run cost about as much as
Python's own start-up; `enginefab list` builds one.

A command is named by `"module:attribute"` under enginefab.cli: a function (one command) or a
`typer.Typer` (a group such as `store`). Its module is imported when the command is listed or run.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator, MutableMapping

import typer
from typer.core import TyperCommand, TyperGroup


def _target(spec: str):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(f"enginefab.cli.{module}"), attr)


def _build(name: str, spec: str):
    """The click command typer makes of `spec`, as `app.command(name)` or `app.add_typer` would."""
    target = _target(spec)
    if isinstance(target, typer.Typer):
        return typer.main.get_command(target)
    single = typer.Typer(rich_markup_mode=None, pretty_exceptions_enable=False, add_completion=False)
    single.command(name)(target)
    return typer.main.get_command(single)


def help_of(spec: str) -> str:
    """A command's help text as typer takes it: the function's docstring, or the group's help."""
    target = _target(spec)
    if isinstance(target, typer.Typer):
        return inspect.cleandoc(target.info.help or "")
    return inspect.getdoc(target) or ""


class LazyCommands(MutableMapping):
    """name → click command, built on first access from a table of `"module:attribute"`."""

    def __init__(self, table: dict[str, str]) -> None:
        self.table = dict(table)
        self.built: dict = {}

    def __getitem__(self, name: str):
        if name not in self.built:
            self.built[name] = _build(name, self.table[name])
        return self.built[name]

    def __setitem__(self, name: str, cmd) -> None:
        self.built[name] = cmd
        self.table.setdefault(name, "")

    def __delitem__(self, name: str) -> None:
        del self.table[name]
        self.built.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)

    def __contains__(self, name: object) -> bool:
        return name in self.table


class LazyGroup(TyperGroup):
    """A TyperGroup over LazyCommands (`COMMANDS` of the subclass)."""

    COMMANDS: dict[str, str] = {}

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        eager, self.commands = self.commands, LazyCommands(self.COMMANDS)
        for name, cmd in eager.items():  # registered with app.command(): built already, listed after the table
            self.commands[name] = cmd

    def list_commands(self, ctx) -> list[str]:
        return list(self.commands)  # names only: TyperGroup's reads every command

    def format_commands(self, ctx, formatter) -> None:
        """The root's command list, each with the short help of its docstring (nothing built)."""
        table, built = self.commands.table, self.commands.built  # type: ignore[attr-defined]
        if not table:
            return
        limit = formatter.width - 6 - max(len(name) for name in table)
        rows = [(name, (built.get(name) or TyperCommand(name, help=help_of(spec))).get_short_help_str(limit))
                for name, spec in table.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)
