"""The phases of a run-step layer, timed in-process: the bench wraps the three calls a run step
makes (unpacking the layers below, applying the build tools, running the step in the sandbox)
for the duration of one build and adds up the seconds each took."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator


@contextlib.contextmanager
def timed_phases() -> Iterator[dict[str, float]]:
    """A dict that fills with `unpack_lower_seconds`, `tools_seconds` and `step_seconds` while
    the block builds; the wrapped functions are restored on leaving."""
    from enginefab.assemble import runstep

    phases: dict[str, float] = {}
    targets = [(runstep.rootfs, "unpack", "unpack_lower_seconds"), (runstep, "apply_tools", "tools_seconds"),
               (runstep.sandbox, "run_step", "step_seconds")]
    saved = []
    for mod, name, label in targets:
        f = getattr(mod, name)

        @functools.wraps(f)
        def wrapper(*a, _f=f, _label=label, **k):
            t0 = time.monotonic()
            try:
                return _f(*a, **k)
            finally:
                phases[_label] = phases.get(_label, 0.0) + time.monotonic() - t0

        setattr(mod, name, wrapper)
        saved.append((mod, name, f))
    try:
        yield phases
    finally:
        for mod, name, f in saved:
            setattr(mod, name, f)
