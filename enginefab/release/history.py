"""Which lock the previous release was: kept beside the notes, so that the next release's notes
say what changed since.

    NOTES_DIR/lock/<alias>.json    the definitions this release published
    NOTES_DIR/since/<alias>.json   the definitions its notes compare with (absent: first release)

A release of a new lock moves `lock/` to `since/`; a release of the same lock again keeps
`since/`, so its notes come out byte for byte the same. `--since @REV` (a git revision of the
checkout, a checkout, or a directory of definitions) names the previous lock explicitly, e.g.
the tag of the last release in CI where no notes directory survives between runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from enginefab.assemble.churn import read_lock
from enginefab.core.definition import Definition, load_definition
from enginefab.core.fsutil import write_atomic
from enginefab.release.plan import lock_digest


def _read_dir(d: Path) -> dict[str, Definition] | None:
    files = sorted(d.glob("*.json")) if d.is_dir() else []
    return {f.stem: load_definition(f) for f in files} or None


def _write_dir(d: Path, defns: dict[str, Definition]) -> None:
    tmp = d.with_name(d.name + ".new")
    _remove(tmp)
    tmp.mkdir(parents=True)
    for alias, defn in sorted(defns.items()):
        write_atomic(tmp / f"{alias}.json", defn.to_json())
    _remove(d)
    tmp.rename(d)


def _remove(d: Path) -> None:
    """Remove what this module wrote at `d` (a symlink there is removed, never followed)."""
    if d.is_symlink() or d.is_file():
        d.unlink()
    else:
        shutil.rmtree(d, ignore_errors=True)


def previous(notes_dir: Path | None, current: dict[str, Definition], since: str | None,
             project: Path) -> dict[str, Definition] | None:
    """The previous release's definitions of the images released now (None: no previous)."""
    if since is not None:
        old = read_lock(since, project)
    elif notes_dir is None:
        return None
    else:
        saved = _read_dir(notes_dir / "lock")
        if saved is None:
            return None
        same = lock_digest(list(saved.values())) == lock_digest(list(current.values()))
        old = (_read_dir(notes_dir / "since") or {}) if same else saved
    mine = {a: d for a, d in old.items() if a in current}
    return mine or None


def remember(notes_dir: Path, current: dict[str, Definition], old: dict[str, Definition] | None) -> None:
    """Keep this release's lock and the one its notes compared with, for the next release."""
    notes_dir.mkdir(parents=True, exist_ok=True)
    if old:
        _write_dir(notes_dir / "since", old)
    else:
        _remove(notes_dir / "since")
    _write_dir(notes_dir / "lock", current)
