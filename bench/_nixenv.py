"""A private, offline Nix as tests/test_nix.py and bench/nix.py run it (not a benchmark itself).

Debian's nix-bin with its own store, state, logs and config under one directory; the sandbox on;
nixpkgs replaced by the host-toolchain shim (nix/host-toolchain: the host's Python runs
enginefab, and it and the host's bwrap/proot/qemu are bound into the sandbox); every fetch served
by a hashed mirror (enginefab's download cache has the layout, sha256/<hex>), bound too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def copy_checkout(dest: Path) -> Path:
    """The checkout's files as a commit would hold them (tracked + untracked, not ignored)."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.split(b"\0")
    for rel in filter(None, files):
        src = ROOT / os.fsdecode(rel)
        if src.is_file():
            (dest / os.fsdecode(rel)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / os.fsdecode(rel))
    return dest


def make_shim(dest: Path) -> Path:
    """nix/host-toolchain with this interpreter (its environment has enginefab's dependencies)."""
    dest.mkdir(parents=True)
    shutil.copy(ROOT / "nix" / "host-toolchain" / "flake.nix", dest / "flake.nix")
    (dest / "interpreter").write_text(sys.executable + "\n")
    return dest


def sandbox_paths(*more: Path) -> list[str]:
    """What the shim's builders need from the host: the interpreter (its prefix, the venv with
    enginefab's dependencies), /usr (bwrap, proot, qemu-*-static, libraries), the loader."""
    paths = ["/usr", "/lib", "/lib64", sys.prefix, os.path.realpath(sys.base_prefix), *map(str, more)]
    return sorted({p for p in paths if os.path.lexists(p)})


def config(mirror: Path, *, sandbox: bool = True) -> str:
    return "\n".join([
        "experimental-features = nix-command flakes",
        "build-users-group =",
        "substituters =",
        f"sandbox = {'true' if sandbox else 'false'}",
        "sandbox-fallback = false",
        f"extra-sandbox-paths = {' '.join(sandbox_paths(mirror))}",
        "warn-dirty = false",
        "max-jobs = 4",
        f"hashed-mirrors = file://{mirror}/",
    ])


def environ(base: Path, mirror: Path, *, sandbox: bool = True) -> dict[str, str]:
    """The environment of a Nix whose store, state, logs and config are under `base`."""
    (base / "etc").mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIX_")}
    env.update(NIX_STORE_DIR=str(base / "store"), NIX_STATE_DIR=str(base / "state"), NIX_LOG_DIR=str(base / "log"),
               NIX_CONF_DIR=str(base / "etc"), XDG_CACHE_HOME=str(base / "xdg"),
               NIX_CONFIG=config(mirror, sandbox=sandbox))
    return env


def rmtree(path: Path) -> None:
    """Remove a tree that holds a Nix store (its directories are read-only)."""
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            if not os.path.islink(os.path.join(dirpath, d)):
                os.chmod(os.path.join(dirpath, d), 0o700)
    shutil.rmtree(path)


def repin(defns: dict, alias: str):
    """A one-pin change, as a re-lock would make it: (`alias`'s definition with one pure-Python
    wheel pinned to the version another image of the matrix pins, that input)."""
    defn = defns[alias]
    for n, layer in enumerate(defn.layers):
        if layer.kind != "wheels" or len(layer.inputs) != 1:
            continue
        old = layer.inputs[0]
        other = next((i for d in defns.values() for lay in d.layers for i in lay.inputs if i.kind == "wheel"
                      and i.name == old.name and i.sha256 != old.sha256
                      and (i.filename or "").endswith("-none-any.whl")), None)
        if other is not None:
            layers = list(defn.layers)
            layers[n] = layer.model_copy(update={"inputs": [other]})
            return defn.model_copy(update={"layers": layers}), other
    raise RuntimeError(f"no wheel of {alias} is pinned to another version elsewhere in the matrix")
