"""Why an input cannot be built by Nix: `enginefab nix missing-input` (nix/fetch.nix).

The builder of the derivations that stand for a file a user must supply (a manual input), a
manual input with no pinned hash yet (awaiting), a base image whose layers were never
resolved, and a package of an apt repository that was out of reach at lock time (unpinned). It always fails, with an error naming the input and the fix. It runs enginefab itself,
not a shell: Nix's sandbox has no /bin/sh, and a message that never prints explains nothing.

A manual input's derivation is fixed-output and named after the file, so that
`nix-store --add-fixed sha256 FILE` makes its output valid and this never runs.
"""

from __future__ import annotations

from enginefab.core.definition import Input
from enginefab.core.errors import BuildError

KINDS = ("manual", "awaiting", "unresolved", "unpinned")


def file_name(inp: Input) -> str:
    """nix/fetch.nix `fileName`: the store name a manual input's derivation gets."""
    if inp.filename:
        return inp.filename
    if inp.url:
        return inp.url.rsplit("/", 1)[-1]
    return f"{inp.name}-{inp.version}"


def missing_input(kind: str, inp: Input) -> BuildError:
    """The error a missing input's derivation fails with."""
    name, where = file_name(inp), inp.where or "its vendor"
    if kind in ("manual", "awaiting") and inp.kind == "git":
        return BuildError(
            f"{name} is the archive enginefab makes of {inp.url} at commit {inp.commit} (tree {inp.tree}); "
            "Nix does not fetch git inputs itself",
            input=inp.ref,
            fix=f"`enginefab build IMAGE` where {inp.url} is reachable (the archive lands in the download "
            f"cache, ~/.cache/enginefab/downloads/sha256/), then `nix-store --add-fixed sha256` that file as {name}",
        )
    if kind == "manual":
        size = f" and {inp.size} bytes" if inp.size else ""
        return BuildError(
            f"{name} ({inp.version}) cannot be downloaded automatically; get it from {where} "
            f"(sha256 {inp.sha256}{size})",
            input=inp.ref,
            fix=f"add it to the Nix store: `nix-store --add-fixed sha256 {name}` "
            f"(for the enginefab CLI: `enginefab lock --add-file {name}`)",
        )
    if kind == "awaiting":
        return BuildError(
            f"{name} ({inp.version}) has no pinned sha256 yet: its upstream publishes none; get it from {where}",
            input=inp.ref,
            fix=f"`enginefab lock --add-file {name}` (records its hash in engines/manual-pins.toml), "
            f"`enginefab lock` (carries it into build/*.json; commit both), then "
            f"`nix-store --add-fixed sha256 {name}`",
        )
    if kind == "unresolved":
        return BuildError(
            f"the base image {inp.url} is pinned by digest only: its registry was unreachable when the "
            "image was locked, so the lock lists no layers to fetch",
            input=inp.ref,
            fix="run `enginefab lock IMAGE` where the registry (or a mirror in registry/mirrors.toml) is "
            "reachable, then review and commit build/IMAGE.json",
        )
    if kind == "unpinned":
        return BuildError(
            f"{inp.name} {inp.version} is not pinned yet: its repository was not reachable when the image was "
            f"locked (from {where})",
            input=inp.ref,
            fix="run `enginefab lock IMAGE` on a machine that reaches the repository, then review and commit "
            "build/IMAGE.json",
        )
    return BuildError(f"unknown kind of missing input {kind!r}", fix=f"one of {', '.join(KINDS)}")
