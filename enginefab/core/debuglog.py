"""The debug log: what libraries warn about (Python warnings, e.g. the wheel installer's
`RuntimeWarning: Skip installing …/__pycache__/…`) goes to a file, not the user's terminal."""

from __future__ import annotations

import logging
from pathlib import Path


def setup(path: Path) -> None:
    """Route Python warnings and the reporters' debug messages (`core.reporter`) to `path`
    (created at the first line)."""
    logging.captureWarnings(True)
    warnings, ours = logging.getLogger("py.warnings"), logging.getLogger("enginefab")
    warnings.propagate = ours.propagate = False
    if any(getattr(h, "baseFilename", None) == str(path.resolve()) for h in warnings.handlers):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    warnings.addHandler(handler)
    warnings.setLevel(logging.WARNING)
    ours.addHandler(handler)
    ours.setLevel(logging.DEBUG)
