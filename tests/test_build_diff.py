"""`diff` explains why two layers differ when their files agree: tar headers, or only compression."""

from __future__ import annotations

from pathlib import Path

from enginefab.assemble import compress
from enginefab.assemble.diff import LayerRef, diff_files, pair_layers
from enginefab.assemble.staging import Staging
from enginefab.assemble.tarball import pack


def packed(tmp_path: Path, name: str, *, mtime: int = 1, algorithm: str = "gzip", content: bytes = b"print(1)\n"):
    st = Staging(tmp_path / f"tree-{name}")
    st.root.mkdir()
    st.mkdir("app", input="t")
    st.write_file("app/main.py", content, 0o644, input="t")
    st.symlink("app/latest", "main.py", input="t")
    out = tmp_path / f"{name}.blob"
    with open(out, "wb") as f:
        p = pack(st, compress.contract(algorithm), mtime, f)
    return LayerRef(name, p.digest, p.diff_id, compress.MEDIA_TYPES[algorithm], p.size, out)


def test_same_files_different_times_are_explained(tmp_path):
    a, b = packed(tmp_path, "a", mtime=1), packed(tmp_path, "b", mtime=1700000000)
    assert a.digest != b.digest
    d = diff_files(a, b)
    assert d["counts"] == {"changed": 0, "added": 0, "removed": 0}
    assert "tar headers differ in mtime" in d["explanation"]


def test_same_tar_other_compression_is_explained(tmp_path):
    a, b = packed(tmp_path, "a"), packed(tmp_path, "b", algorithm="zstd")
    assert a.digest != b.digest and a.diff_id == b.diff_id
    assert "compressed bytes differ" in diff_files(a, b)["explanation"]


def test_changed_content_is_listed_with_its_fields(tmp_path):
    a, b = packed(tmp_path, "a"), packed(tmp_path, "b", content=b"print(2)\n")
    d = diff_files(a, b)
    assert [c["path"] for c in d["changed"]] == ["app/main.py"]
    assert d["changed"][0]["fields"] == ["sha256"] and "explanation" not in d


def test_layers_pair_by_id_then_stem_then_position():
    def ref(i: str) -> LayerRef:
        return LayerRef(i, "sha256:" + "0" * 64)

    a = [ref("os/debian-11-x86_64-498f7619"), ref("wheels/numpy-2cda9ce8"), ref("config/users-7b927ac8")]
    b = [ref("os/debian-11-x86_64-498f7619"), ref("wheels/numpy-11112222"), ref("wheel/torch-1.8.0-2318fac8"),
         ref("config/users-7b927ac8")]
    pairs = [(x.id if x else None, y.id if y else None) for x, y in pair_layers(a, b)]
    assert pairs == [("os/debian-11-x86_64-498f7619", "os/debian-11-x86_64-498f7619"),
                     ("wheels/numpy-2cda9ce8", "wheels/numpy-11112222"),
                     ("config/users-7b927ac8", "config/users-7b927ac8"),
                     (None, "wheel/torch-1.8.0-2318fac8")]
