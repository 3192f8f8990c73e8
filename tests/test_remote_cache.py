"""A registry as the action cache shared by CI runners (`build --cache HOST/PREFIX`).

Runner stores are hard-linked copies of the session's demo store (`demo_build`: every layer of
both demos packed from scratch) with some action entries removed, so that a runner packs those
layers for real and takes the others from its own store; a runner "with an empty store" starts
from nothing. Every runner is its own process (the CLI), on a docker-registry on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tests.conftest import cli, enginefab

X86, ARM = "demo-pytorch-x86_64", "demo-pytorch-aarch64"


def layers(demo_build) -> dict[str, dict]:
    """layer id → its result in the session's build (key, size, digests)."""
    return {o["id"]: o for r in demo_build["results"] for o in r["layer_results"]}


def smallest(demo_build, n: int) -> list[dict]:
    return sorted(layers(demo_build).values(), key=lambda o: o["size"])[:n]


def runner_store(demo_build, path: Path, drop: list[dict] = ()) -> Path:
    """A runner's store: the session store's blobs and entries (hard links), minus `drop`'s entries."""
    for d in ("blobs", "actions"):
        shutil.copytree(demo_build["store"] / d, path / d, copy_function=os.link)
    for o in drop:
        (path / "actions" / f"{o['key']}.json").unlink()
    return path


def build(store: Path, out: Path, cache: str, *extra: str, as_json: bool = True):
    args = ["build", X86, ARM, "--store", str(store), "--out", str(out), "--cache", cache, *extra]
    p = enginefab(*args, *(["--json"] if as_json else []), env={"ENGINEFAB_QUIET": "0"})
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout) if as_json else p


def statuses(results: list[dict], status: str) -> list[str]:
    """The layer ids with that status (a layer two images share counts once: the second finds it)."""
    return sorted({o["id"] for r in results for o in r["layer_results"] if o["status"] == status})


def digests_of(p) -> dict[str, str]:
    return dict(line.split() for line in p.stdout.splitlines())


def test_a_runner_with_an_empty_store_pulls_what_another_packed(demo_build, registry, tmp_path):
    cache = f"{registry.host}/ci/enginefab-cache"
    packed = smallest(demo_build, 2)
    # runner 1: packs two layers itself; the rest its store had from earlier builds. All go to the cache.
    first = build(runner_store(demo_build, tmp_path / "runner1", packed), tmp_path / "out1", cache)
    assert statuses(first, "built") == sorted(o["id"] for o in packed)
    assert {r["alias"]: r["digest"] for r in first} == demo_build["digests"]
    # runner 2, another process with an empty store: packs nothing, pulls every layer once, same digests
    second = build(tmp_path / "runner2", tmp_path / "out2", cache)
    assert statuses(second, "built") == []
    assert statuses(second, "pulled") == sorted(layers(demo_build))
    assert sum(r["pulled"] for r in second) == len(layers(demo_build))
    assert {r["alias"]: r["digest"] for r in second} == demo_build["digests"]
    index = json.loads((tmp_path / "out2" / "index.json").read_text())
    assert {m["digest"] for m in index["manifests"]} >= set(demo_build["digests"].values())
    verify = enginefab("store", "verify", "--store", str(tmp_path / "runner2"))
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_cache_that_is_down_only_slows_the_build(demo_build, registry, tmp_path):
    drop = smallest(demo_build, 1)
    cache = f"{registry.host}/ci/enginefab-cache"
    registry.stop()
    p = build(runner_store(demo_build, tmp_path / "runner", drop), tmp_path / "out", cache, as_json=False)
    assert digests_of(p) == demo_build["digests"]
    assert f"built {drop[0]['id']}" in p.stderr
    assert f"the shared cache {cache} is off for this build" in p.stderr and "cannot reach" in p.stderr
    assert "0 layers pulled" in p.stderr


def test_a_hostile_cache_is_refused_and_the_layer_rebuilt(demo_build, registry, tmp_path):
    from enginefab.transport.actioncache import RegistryActionCache

    cache = f"{registry.host}/ci/enginefab-cache"
    forged, tampered = smallest(demo_build, 2)
    store = demo_build["store"]
    remote = RegistryActionCache.at(cache)
    for o in (forged, tampered):
        entry = json.loads((store / "actions" / f"{o['key']}.json").read_text())
        body = {"key": o["key"], **entry}
        if o is forged:  # pushed by someone who may write to the cache: a diff_id the blob does not have
            body["diff_id"] = "sha256:" + "0" * 64
        remote.publish(o["key"], body, store / "blobs" / "sha256" / entry["digest"][7:])
    # …and one blob's bytes changed inside the registry's storage
    digest = tampered["digests"][0]
    data = registry.root / "data/docker/registry/v2/blobs/sha256" / digest[7:9] / digest[7:] / "data"
    data.write_bytes(data.read_bytes()[:-1] + bytes([data.read_bytes()[-1] ^ 1]))

    p = build(runner_store(demo_build, tmp_path / "runner", [forged, tampered]), tmp_path / "out", cache,
              as_json=False)
    assert digests_of(p) == demo_build["digests"]
    assert f"built {forged['id']}" in p.stderr and f"built {tampered['id']}" in p.stderr
    refused = "note: refused the shared cache's entry for layer"
    assert f"{refused} {forged['id']} of {X86}: blob {forged['digests'][0]} unpacks to sha256:" in p.stderr
    assert "the entry says diff_id sha256:" + "0" * 64 in p.stderr
    assert f"{refused} {tampered['id']} of {X86}" in p.stderr
    # the forged entry was replaced by the one this runner packed
    entry, _ = remote.lookup(forged["key"])
    assert entry == {"key": forged["key"], **json.loads((store / "actions" / f"{forged['key']}.json").read_text())}
    verify = enginefab("store", "verify", "--store", str(tmp_path / "runner"))
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_cache_address_without_a_repository_is_refused():
    p = cli("build", ARM, "--cache", "127.0.0.1:5000")
    assert p.returncode == 2 and "--cache 127.0.0.1:5000" in p.stderr and "HOST[:PORT]/PREFIX" in p.stderr
    assert "Traceback" not in p.stderr
