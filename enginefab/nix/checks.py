"""The flake's checks: `enginefab nix flake-check lock|definitions` (nix/checks.nix).

`lock`: `enginefab lock --check` (engines/ and build/ agree, nothing is missing). `definitions`:
the definition-level compatibility rules of every image. Both are offline and read only the
matrix (engines/, build/, registry/, pyproject.toml). The JSON report is the derivation's output;
a failing check exits 1 and prints the same report to the build log (`nix log`), since a failed
derivation keeps no output.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from enginefab.assemble.store import Store
from enginefab.check.runner import run_checks
from enginefab.core.errors import CheckError
from enginefab.engines.matrix import load
from enginefab.lock import check as lock_check
from enginefab.transport.session import Session

CHECKS = ("lock", "definitions")


def flake_check(name: str, root: Path) -> tuple[bool, bytes]:
    """(passed, JSON report) of one flake check over the matrix at `root`."""
    m = load(root)
    if name == "lock":
        problems, warnings = lock_check.check(m)
        report: object = {"ok": not problems, "problems": problems, "warnings": warnings}
        ok = not problems
    elif name == "definitions":
        with tempfile.TemporaryDirectory(prefix="enginefab-check-") as tmp:  # the definition level reads no store
            reps = run_checks(m, m.images, Store(Path(tmp)), Session(downloads=Path(tmp) / "downloads"),
                              levels=["definition"])
        report = [r.as_dict() for r in reps]
        ok = all(r.ok for r in reps)
    else:
        raise CheckError(f"no flake check named {name!r}", fix=f"one of {', '.join(CHECKS)}")
    return ok, (json.dumps(report, indent=1, sort_keys=True) + "\n").encode()
