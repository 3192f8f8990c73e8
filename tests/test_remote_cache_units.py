"""The shared action cache's checks on what comes in (assemble/remote.py), without a registry
process: a remote that lies in one way at a time, and servers that never answer."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import time

import pytest

from enginefab.assemble.remote import SharedCache
from enginefab.assemble.store import Store
from enginefab.transport.actioncache import RegistryActionCache
from enginefab.transport.errors import Stalled, TransportFailed
from enginefab.transport.options import HttpOptions
from tests import hostile_http as hostile
from tests.conftest import demo_definition

KEY = "ab" * 32


def layer_bytes() -> tuple[bytes, bytes]:
    """A real one-file layer: (tar, gzip of it)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        data = b"hello from another runner\n"
        info = tarfile.TarInfo("etc/motd")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return raw, gzip.compress(raw, mtime=0)


class FakeRemote:
    where = "fake/cache"

    def __init__(self, entry: dict, blob: bytes, fail=None) -> None:
        self.entry, self.data, self.fail = entry, blob, fail
        self.calls = 0

    def lookup(self, key):
        self.calls += 1
        if self.fail:
            raise self.fail
        return self.entry, {"digest": self.entry["digest"], "size": self.entry["size"]}

    def blob(self, digest, size):
        for i in range(0, len(self.data), 7):
            yield self.data[i:i + 7]

    def has(self, key):
        return False

    def publish(self, key, entry, blob):
        self.calls += 1
        raise OSError("disk on fire")


@pytest.fixture
def good():
    defn = demo_definition()
    layer = next(x for x in defn.layers if x.kind == "files")
    raw, gz = layer_bytes()
    entry = {"key": KEY, "layer": layer.id, "media_type": "application/vnd.oci.image.layer.v1.tar+gzip",
             "digest": "sha256:" + hashlib.sha256(gz).hexdigest(), "size": len(gz),
             "diff_id": "sha256:" + hashlib.sha256(raw).hexdigest()}
    return defn, layer, entry, gz


def test_an_entry_whose_claims_hold_lands_in_the_store(good, tmp_path):
    defn, layer, entry, gz = good
    assert defn.compression.algorithm == "gzip"
    store = Store(tmp_path / "store")
    shared = SharedCache(FakeRemote(entry, gz), store)
    got = shared.pull(defn, layer, KEY)
    assert got is not None and got["digest"] == entry["digest"] and "key" not in got
    assert store.action_get(KEY) == got and store.read(entry["digest"]) == gz
    assert shared.pulled == 1 and store.verify() == []


@pytest.mark.parametrize("lie, says", [
    ({"key": "cd" * 32}, "it is the entry of"),
    ({"layer": "wheel/other"}, "it is the entry of"),
    ({"media_type": "application/vnd.oci.image.layer.v1.tar+zstd"}, "the contract says"),
    ({"diff_id": "sha256:" + "0" * 64}, "unpacks to sha256:"),
    ({"size": 3}, "longer than its 3 bytes"),
    ({"digest": "sha256:" + "1" * 64}, "arrived as sha256:"),
    ({"digest": "../../etc/passwd"}, "digest '../../etc/passwd'"),
    ({"tar_size": "lots"}, "tar_size 'lots'"),
    ({"diff_id": None}, "diff_id None"),
])
def test_an_entry_that_lies_is_refused_and_nothing_lands(good, tmp_path, lie, says):
    defn, layer, entry, gz = good
    store = Store(tmp_path / "store")
    shared = SharedCache(FakeRemote({**entry, **lie}, gz), store)
    assert shared.pull(defn, layer, KEY) is None
    assert store.action_get(KEY) is None and not list((store.root / "blobs" / "sha256").iterdir())
    assert len(shared.notes) == 1 and says in shared.notes[0] and shared.down is None
    assert not list((store.root / "tmp").iterdir())


def test_bytes_that_are_not_a_layer_are_refused(good, tmp_path):
    defn, layer, entry, _ = good
    junk = b"\x1f\x8b" + b"\xff" * 40
    entry = {**entry, "digest": "sha256:" + hashlib.sha256(junk).hexdigest(), "size": len(junk)}
    shared = SharedCache(FakeRemote(entry, junk), Store(tmp_path / "store"))
    assert shared.pull(defn, layer, KEY) is None and "does not decompress" in shared.notes[0]


def test_a_cache_that_fails_is_asked_once_and_never_raises(good, tmp_path):
    defn, layer, entry, gz = good
    stalled = TransportFailed(Stalled("no progress for 10 s", host="h", url="u"), None)
    remote = FakeRemote(entry, gz, fail=stalled)
    shared = SharedCache(remote, Store(tmp_path / "store"))
    assert shared.pull(defn, layer, KEY) is None and shared.down
    assert shared.pull(defn, layer, KEY) is None and remote.calls == 1
    shared.publish(KEY, entry)
    assert remote.calls == 1 and "off for this build" in shared.notes[0]


def test_a_failed_write_turns_the_cache_off_without_failing(good, tmp_path):
    defn, layer, entry, gz = good
    store = Store(tmp_path / "store")
    store.put_bytes(gz)
    shared = SharedCache(FakeRemote(entry, gz), store)
    shared.publish(KEY, entry)
    assert shared.down == "disk on fire" and shared.published == 0


def test_a_registry_that_never_answers_costs_one_bounded_wait(good, tmp_path):
    defn, layer, _, _ = good
    quick = HttpOptions(connect_timeout=1, deadline=1.5, stall_timeout=1.5, retries=0)
    with hostile.HostileServer(hostile.silent) as srv:
        shared = SharedCache(RegistryActionCache.at(f"{srv.host}/ci/cache", options=quick), Store(tmp_path / "s"))
        t0 = time.monotonic()
        assert shared.pull(defn, layer, KEY) is None
        first = time.monotonic() - t0
        asked = len(srv.seen)
        assert shared.pull(defn, layer, "cd" * 32) is None
    assert first < 6 and shared.down and "gave no answer" in shared.down
    assert len(srv.seen) == asked  # off: not asked again


def test_a_cache_that_stalls_mid_blob_leaves_nothing_and_is_turned_off(good, tmp_path):
    defn, layer, entry, gz = good

    class Stalling(FakeRemote):
        def blob(self, digest, size):
            yield gz[:10]
            raise TransportFailed(Stalled("no progress for 10 s while receiving", host="h", url="u"), None)

    store = Store(tmp_path / "store")
    shared = SharedCache(Stalling(entry, gz), store)
    assert shared.pull(defn, layer, KEY) is None and "no progress" in (shared.down or "")
    assert not list((store.root / "blobs" / "sha256").iterdir()) and not list((store.root / "tmp").iterdir())
    assert store.action_get(KEY) is None


def test_a_cache_that_refuses_writes_is_still_read(good, tmp_path):
    from enginefab.core.errors import RegistryError

    defn, layer, entry, gz = good

    class ReadOnly(FakeRemote):
        def publish(self, key, entry, blob):
            self.calls += 1
            raise RegistryError("manifest ci/cache:action-…: 127.0.0.1 denied it (HTTP 403)")

    store = Store(tmp_path / "store")
    store.put_bytes(gz)
    remote = ReadOnly(entry, gz)
    shared = SharedCache(remote, store)
    shared.publish("cd" * 32, entry)
    shared.publish("ef" * 32, entry)
    assert remote.calls == 1 and shared.read_only and shared.down is None
    assert shared.pull(defn, layer, KEY) is not None and shared.pulled == 1
