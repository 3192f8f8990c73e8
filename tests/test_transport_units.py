"""Small pieces of the transport, without a server: files that land whole or not at all, the
auth-challenge parser, and options that refuse nonsense."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from enginefab.transport.auth import parse_challenge
from enginefab.transport.landing import landing, sweep
from enginefab.transport.options import HttpOptions


def test_a_landing_file_appears_only_when_committed_and_leaves_nothing_otherwise(tmp_path):
    dest = tmp_path / "blobs" / "x"
    with landing(dest.parent) as out:
        out.file.write(b"half")
        assert list(dest.parent.iterdir()) == []  # no name yet: nothing to find, nothing to trust
    assert list(dest.parent.iterdir()) == []
    with pytest.raises(RuntimeError):
        with landing(dest.parent) as out:
            out.file.write(b"broken")
            raise RuntimeError
    assert list(dest.parent.iterdir()) == []
    with landing(dest.parent, mode=0o444) as out:
        out.file.write(b"whole")
        out.commit(dest)
    assert dest.read_bytes() == b"whole" and oct(dest.stat().st_mode & 0o777) == "0o444"
    assert [p.name for p in dest.parent.iterdir()] == ["x"]


def test_sweep_removes_the_parts_of_dead_processes_only(tmp_path):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    mine, theirs, older, other = (tmp_path / f".{os.getpid()}-0.part", tmp_path / f".{dead}-3.part",
                                  tmp_path / f".{'ab' * 32}.{dead}.part", tmp_path / "keep.part")
    for p in (mine, theirs, older, other):
        p.write_bytes(b"x")
    assert sweep(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, other.name])


def test_challenges_parse_quoted_unquoted_and_escaped_parameters():
    ch = parse_challenge('Bearer realm="https://auth.example/token",service="reg \\"one\\"",scope="repository:a:pull"')
    assert (ch.scheme, ch.realm, ch.service, ch.scope) == ("bearer", "https://auth.example/token", 'reg "one"',
                                                           "repository:a:pull")
    ch = parse_challenge("Bearer realm=https://auth.example/token, service=registry.example")
    assert (ch.realm, ch.service) == ("https://auth.example/token", "registry.example")
    assert parse_challenge('Basic realm="enginefab"').scheme == "basic"


def test_options_refuse_nonsense():
    with pytest.raises(ValueError, match="deadline must be positive"):
        HttpOptions(deadline=0)
    with pytest.raises(ValueError, match="retries must be 0…10"):
        HttpOptions(retries=-1)
