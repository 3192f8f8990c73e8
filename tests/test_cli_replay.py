"""`--help`, `list` and `lock --check` replayed from the cache (cli/replay.py) print what the full run
prints, byte for byte, with its exit code, without importing typer; any changed byte of engines/,
build/ or of a download-cache blob build/ names makes the next run a full one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from enginefab.cli import replay
from tests.conftest import ROOT

_PROBE = """
import json, sys
sys.argv = ["enginefab", *json.loads(sys.argv[1])]
from enginefab.cli.main import main
try:
    main()
except SystemExit as e:
    code = e.code
sys.stderr.flush()
print("\\n" + json.dumps({"exit": code, "typer": "typer" in sys.modules}), file=sys.stderr)
"""


@pytest.fixture
def project(engines_copy: Path, tmp_path: Path) -> dict:
    """The environment of a scratch checkout with its own cache (replays and download cache)."""
    env = {k: v for k, v in os.environ.items() if k != "ENGINEFAB_NO_REPLAY"}
    env.update(ENGINEFAB_ROOT=str(engines_copy), ENGINEFAB_CACHE=str(tmp_path / "cache"), ENGINEFAB_QUIET="1")
    return env


def run(env: dict, *args: str, full: bool = False) -> tuple[int, str, str, bool]:
    """exit code, stdout, stderr, and whether typer was imported (False: a replay)."""
    e = dict(env, **({"ENGINEFAB_NO_REPLAY": "1"} if full else {}))
    p = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(args)], cwd=ROOT, env=e, capture_output=True,
                       timeout=300)
    err, _, tail = p.stderr.decode().removesuffix("\n").rpartition("\n")  # the probe's line ends what it wrote
    info = json.loads(tail)
    return info["exit"], p.stdout.decode(), err, info["typer"]


@pytest.mark.parametrize("args", [("--help",), ("list",), ("list", "--json"), ("lock", "--check"),
                                  ("lock", "--check", "--json")])
def test_a_replay_prints_what_the_full_run_prints(project, args):
    code, out, err, typer_loaded = run(project, *args, full=True)
    assert typer_loaded and out + err  # the reference: no cache at all
    first = run(project, *args)
    assert first[3], "the first run is a full one (and records)"
    replayed = run(project, *args)
    assert not replayed[3], "the second run is a replay: typer not imported"
    assert first[:3] == replayed[:3] == (code, out, err)


def test_one_byte_of_build_changes_and_lock_check_runs_in_full_and_fails(project):
    root = Path(project["ENGINEFAB_ROOT"])
    assert run(project, "lock", "--check")[0] == 0
    assert not run(project, "lock", "--check")[3]  # replayed
    defn = root / "build" / "demo-pytorch-x86_64.json"
    data = defn.read_bytes()
    i = data.index(b'"sha256": "') + len(b'"sha256": "')
    defn.write_bytes(data[:i] + (b"0" if data[i:i + 1] != b"0" else b"1") + data[i + 1:])
    code, out, err, typer_loaded = run(project, "lock", "--check")
    assert typer_loaded, "a changed byte of build/ must not replay"
    assert code == 1 and "demo-pytorch-x86_64" in out + err
    assert (code, out, err) == run(project, "lock", "--check", full=True)[:3]


def test_one_byte_of_engines_changes_and_list_runs_in_full(project):
    root = Path(project["ENGINEFAB_ROOT"])
    before = run(project, "list")
    assert not run(project, "list")[3]  # replayed
    toml = root / "engines" / "platforms.toml"
    toml.write_bytes(toml.read_bytes() + b"#")  # one byte, no change of meaning: still not a replay
    again = run(project, "list")
    assert again[3] and again[:3] == before[:3]
    toml.write_bytes(toml.read_bytes()[:-1] + b"[")  # now broken
    code, out, err, typer_loaded = run(project, "list")
    assert typer_loaded and (code, out, err) != before[:3]
    assert (code, out, err) == run(project, "list", full=True)[:3]


def test_a_download_cache_blob_that_changes_makes_lock_check_run_in_full(project):
    """lock --check compares the bytes the download cache holds under a pin's sha256 with the pin:
    a blob that appears (here: of the wrong size) is seen although only its size was read."""
    root = Path(project["ENGINEFAB_ROOT"])
    assert run(project, "lock", "--check")[0] == 0
    assert not run(project, "lock", "--check")[3]
    pin = json.loads((root / "build" / "demo-pytorch-x86_64.json").read_text())["layers"][1]["inputs"][0]
    blob = Path(project["ENGINEFAB_CACHE"]) / "downloads" / "sha256" / pin["sha256"]
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(b"x" * (pin["size"] + 1))
    code, out, err, typer_loaded = run(project, "lock", "--check")
    assert typer_loaded and code == 1 and "the download cache holds" in out + err


def test_other_commands_and_an_environment_change_are_not_replayed(project):
    run(project, "list")
    assert not run(project, "list")[3]
    assert run(dict(project, COLUMNS="61"), "list")[3]  # another width: a full run
    assert run(project, "show", "demo-pytorch-x86_64")[3] and run(project, "show", "demo-pytorch-x86_64")[3]


@pytest.mark.slow
def test_a_no_op_build_replays_until_its_layout_loses_a_file(demo_build, tmp_path):
    """A build that built nothing is replayed next time (no assembler, no transport); once a file
    of what it left is gone, the next build is a full one and puts it back."""
    env = {k: v for k, v in os.environ.items() if k != "ENGINEFAB_NO_REPLAY"}
    env.update(ENGINEFAB_CACHE=str(tmp_path / "cache"), ENGINEFAB_QUIET="1")
    out = tmp_path / "out"
    args = ("build", "--demo", "--store", str(demo_build["store"]), "--out", str(out))
    first = run(env, *args)  # writes the layout: not a no-op, not recorded
    no_op = run(env, *args)
    replayed = run(env, *args)
    assert first[0] == 0 and first[3] and no_op[3] and not replayed[3]
    assert first[:3] == no_op[:3] == replayed[:3]
    for alias, digest in demo_build["digests"].items():
        assert f"{alias} {digest}" in replayed[1]
    blob = out / "blobs" / "sha256" / demo_build["digests"][replayed[1].split()[0]].removeprefix("sha256:")
    blob.unlink()
    again = run(env, *args)
    assert again[3] and again[:3] == first[:3] and blob.is_file()


def test_the_replay_cache_keeps_only_the_newest_records(tmp_path):
    for i in range(replay._KEEP + 6):
        p = tmp_path / f"{i:064x}.json"
        p.write_text("{}")
        os.utime(p, ns=(i * 10**9, i * 10**9))
    replay._prune(tmp_path)
    kept = sorted(int(p.stem, 16) for p in tmp_path.glob("*.json"))
    assert kept == list(range(6, replay._KEEP + 6))
