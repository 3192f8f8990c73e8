"""The debug log: what libraries warn about (Python warnings, e.g. the wheel installer's
`RuntimeWarning: Skip installing …/__pycache__/…`) goes to a file, not the user's terminal."""

from __future__ import annotations

import logging
from pathlib import Path


def setup(path: Path) -> None:
    """Route Python warnings to `path` (created at the first warning)."""
    logging.captureWarnings(True)
    log = logging.getLogger("py.warnings")
    log.propagate = False
    if any(getattr(h, "baseFilename", None) == str(path.resolve()) for h in log.handlers):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.WARNING)
