"""`enginefab lock --add-file`: a user-downloaded file (manual input) into the download cache.

When upstream published the file's sha256, the file must match it. When upstream published
none, the hash of the file the user supplies is recorded in engines/manual-pins.toml (a
reviewable, committed record of who trusted which bytes) and the next lock carries it.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from enginefab.core.errors import LockError
from enginefab.core.fsutil import sha256_file, write_atomic
from enginefab.engines.matrix import MANUAL_PINS, Matrix
from enginefab.lock.declared import manual_files, manual_pins
from enginefab.transport.download import cache_path


def add_files(m: Matrix, paths: list[Path], downloads: Path) -> list[dict]:
    declared = {}
    for img in m.images:
        for f in manual_files(img):
            declared.setdefault(f.name, f)
    pins = manual_pins(m.root)
    out = []
    new_pins = dict(pins)
    for path in paths:
        if not path.is_file():
            raise LockError(f"{path} is not a file", fix="give the path of the downloaded file")
        sha, size = sha256_file(path)
        decl = declared.get(path.name)
        if decl is None:
            raise LockError(f"no manual input of the matrix is named {path.name!r}",
                            fix="manual inputs: " + ", ".join(sorted(declared)) if declared else "the matrix has none")
        want = decl.sha256 or pins.get(path.name, {}).get("sha256")
        if want and want != sha:
            raise LockError(f"{path.name} has sha256 {sha}, but {'upstream published' if decl.sha256 else 'manual-pins.toml records'} {want}",
                            input=f"manual:{path.name}", fix="download the file again from " + decl.where)
        dest = cache_path(sha, downloads)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            tmp = dest.with_name(f".{sha}.{os.getpid()}")
            shutil.copyfile(path, tmp)
            os.chmod(tmp, 0o444)
            os.replace(tmp, dest)
        status = "matches the published sha256" if decl.sha256 else ("matches manual-pins.toml" if want else "recorded in engines/manual-pins.toml")
        if not want:
            new_pins[path.name] = {"sha256": sha, "size": size,
                                   "added": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
                                   "note": "no published hash upstream; trusted on first use"}
        out.append({"name": path.name, "sha256": sha, "size": size, "status": status})
    if new_pins != pins:
        lines = ["# Hashes of manual inputs whose upstream publishes none, recorded by", "# `enginefab lock --add-file` (trust on first use). Review changes here.", ""]
        for name in sorted(new_pins):
            p = new_pins[name]
            lines.append(f'[files."{name}"]')
            for k in ("sha256", "size", "added", "note"):
                if k in p:
                    v = p[k]
                    lines.append(f"{k} = {v}" if isinstance(v, int) else f'{k} = "{v}"')
            lines.append("")
        write_atomic(m.root / "engines" / MANUAL_PINS, "\n".join(lines).encode())
    return out
