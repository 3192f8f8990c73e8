"""Source builds without building: the tools are taken back out of a step's layer, a failed
step's error shows the compiler's lines, every step gets the reproducible compile environment,
and a run layer's tools are part of its id and key (while layers without tools keep theirs)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from elftools.elf.elffile import ELFFile

from enginefab.assemble import steplog
from enginefab.assemble.diff import LayerRef, Side, diff as diff_layers, render
from enginefab.assemble.keys import layer_key
from enginefab.assemble.runstep import BUILD_DIR, diff, snapshot, step_env
from enginefab.assemble.tools import without_tools
from enginefab.core.definition import Input
from enginefab.lock.layering import _layer, identity
from tests.conftest import demo_definition


def _write(p: Path, text: str) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def test_the_layer_holds_what_the_step_wrote_not_the_tools(tmp_path):
    root = tmp_path / "root"
    _write(root / "usr/lib/python3/site.py", "image's own")
    _write(root / "usr/bin/python3", "image's python")
    _write(root / "etc/keep", "kept")
    _write(root / "etc/other", "stays")
    before = snapshot(root)
    # the tools: a new compiler, and a file of the image replaced by the tools' version
    _write(root / "usr/bin/gcc", "a compiler")
    _write(root / "usr/lib/gcc/x86_64-linux-gnu/10/cc1", "cc1")
    (root / "usr/bin/python3").unlink()
    _write(root / "usr/bin/python3", "the tools' python")
    _write(root / "usr/lib/gcc/x86_64-linux-gnu/10/doomed", "a tool file the step deletes")
    tooled = snapshot(root)
    # the step: builds into the image, changes one tool file, deletes another, deletes an image file
    _write(root / "usr/local/lib/ext.so", "compiled")
    _write(root / "usr/lib/gcc/x86_64-linux-gnu/10/plugin.so", "written by the step, beside the tools")
    (root / "usr/lib/gcc/x86_64-linux-gnu/10/doomed").unlink()
    (root / "etc/keep").unlink()
    after = snapshot(root)
    d = diff(before, without_tools(before, tooled, after))
    assert d.changed == ["usr/lib/gcc/x86_64-linux-gnu/10/plugin.so", "usr/local", "usr/local/lib",
                         "usr/local/lib/ext.so"]
    # the tools' directories above a file of the step's are carried (as the step saw them), nothing else of them
    assert {"usr/lib/gcc", "usr/lib/gcc/x86_64-linux-gnu", "usr/lib/gcc/x86_64-linux-gnu/10"} <= set(d.dirs)
    assert d.whiteouts == ["etc/keep"]  # the image's file, deleted by the step
    assert "usr/bin/gcc" not in d.changed and "usr/bin/python3" not in d.changed  # tools, untouched: not the step's
    # without the tools taken out, the compiler and the tools' python would be in the layer
    assert {"usr/bin/gcc", "usr/bin/python3"} <= set(diff(before, after).changed)


def test_a_tool_file_the_step_rewrites_is_the_steps_work(tmp_path):
    root = tmp_path / "root"
    _write(root / "usr/bin/python3", "image's")
    before = snapshot(root)
    _write(root / "usr/local/lib/python3.9/dist-packages/pip/__init__.py", "pip, a tool")
    tooled = snapshot(root)
    _write(root / "usr/local/lib/python3.9/dist-packages/pip/__init__.py", "patched by the step")
    os.utime(root / "usr/local/lib/python3.9/dist-packages/pip/__init__.py", ns=(1, 1))
    after = snapshot(root)
    assert "usr/local/lib/python3.9/dist-packages/pip/__init__.py" in diff(before, without_tools(before, tooled,
                                                                                                   after)).changed


GCC_FAILURE = ["running build_ext", "building 'mmh3' extension"] + [f"noise {n}" for n in range(200)] + [
    "src/mmh3/mmh3module.c: In function 'broken':",
    "src/mmh3/mmh3module.c:12:5: error: expected ';' before 'return'",
    "   12 |     return 1",
] + [f"more noise {n}" for n in range(100)] + ["error: command '/usr/bin/x86_64-linux-gnu-gcc' failed with exit code 1",
                                               "ERROR: Failed building wheel for mmh3"]


def test_a_failed_steps_excerpt_shows_what_the_compiler_said():
    out = steplog.excerpt(GCC_FAILURE)
    assert "src/mmh3/mmh3module.c:12:5: error: expected ';' before 'return'" in out
    assert "src/mmh3/mmh3module.c: In function 'broken':" in out  # the line before: where
    assert out[-1] == "ERROR: Failed building wheel for mmh3"  # and how it ended
    assert len(out) < 60 and not any(ln.startswith("noise 5") for ln in out)


def test_a_short_log_is_shown_whole_and_long_lines_are_cut():
    assert steplog.excerpt(["a", "b"]) == ["a", "b"]
    cut = steplog.excerpt(["x" * 5000])
    assert len(cut[0]) < 400 and cut[0].endswith("…")


def test_every_step_compiles_in_a_fixed_directory_with_prefix_maps():
    defn = demo_definition("demo-pytorch-x86_64")
    step = Input(kind="run", name="s", version="1", url=None, sha256="0" * 64, size=1, script="true",
                 env={"CPPFLAGS": "-DX"})
    env = step_env(defn, step)
    assert env["ENGINEFAB_BUILD"] == BUILD_DIR
    assert env["CPPFLAGS"] == "-DX"  # a step's own env wins
    plain = step_env(defn, step.model_copy(update={"env": None}))
    assert f"-ffile-prefix-map={BUILD_DIR}=." in plain["CPPFLAGS"] and plain["CPPFLAGS"] == plain["ENGINEFAB_CFLAGS"]
    assert f"-fdebug-prefix-map={BUILD_DIR}=." in plain["CPPFLAGS"]
    # CFLAGS stays unset: setuptools and autoconf would take it instead of their -O2 -g
    assert "CFLAGS" not in plain and "CXXFLAGS" not in plain
    assert plain["LDFLAGS"] == "-Wl,--build-id=none"
    assert plain["SOURCE_DATE_EPOCH"] == "1" and plain["PYTHONDONTWRITEBYTECODE"] == "1"


def test_tools_are_part_of_a_run_layers_id_and_key():
    defn = demo_definition("demo-pytorch-x86_64")
    step = Input(kind="run", name="s", version="1", url=None, sha256="0" * 64, size=1, script="true")
    gcc = next(i for i in defn.inputs() if i.kind == "deb").model_copy(update={"name": "gcc"})
    plain = _layer("run", "run/s", "c", [step])
    tooled = _layer("run", "run/s", "c", [step], tools=[gcc])
    assert plain.tools is None and plain.id != tooled.id
    assert layer_key(defn, plain, ["a"]) != layer_key(defn, tooled, ["a"])
    moved = tooled.model_copy(update={"tools": [gcc.model_copy(update={"url": "https://mirror.example/gcc.deb"})]})
    assert identity(moved) == identity(tooled)  # where a tool is downloaded from is not what it is
    # a layer without tools has the id it had before tools existed (the demos' locks do not change)
    assert "tools" not in plain.model_dump(exclude_none=True)


def _layer_blob(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _rodata_flipped(elf: bytes) -> bytes:
    sec = ELFFile(io.BytesIO(elf)).get_section_by_name(".rodata")
    off = sec["sh_offset"] + sec["sh_size"] // 2
    return elf[:off] + bytes([elf[off] ^ 0xFF]) + elf[off + 1:]


def test_diff_says_where_a_compiled_file_differs_and_that_the_layer_declared_it(tmp_path):
    elf = Path("/bin/true").read_bytes()
    pyc_a = b"\x61\x0d\x0d\x0a" + b"\0" * 4 + b"\x01\0\0\0" + b"\x10\0\0\0" + b"code"
    pyc_b = pyc_a[:8] + b"\x02\0\0\0" + pyc_a[12:]  # another source mtime in the header
    mt = "application/vnd.oci.image.layer.v1.tar+gzip"
    a = _layer_blob(tmp_path / "a.tgz", {"usr/lib/x.so": elf, "m.pyc": pyc_a, "notes.txt": b"one\ntwo\n"})
    b = _layer_blob(tmp_path / "b.tgz", {"usr/lib/x.so": _rodata_flipped(elf), "m.pyc": pyc_b,
                                         "notes.txt": b"one\nTWO\n"})
    la = LayerRef("run/x-1", "sha256:" + "a" * 64, media_type=mt, blob=a, unreproducible="build-x: nvcc names")
    lb = LayerRef("run/x-1", "sha256:" + "b" * 64, media_type=mt, blob=b)
    d = diff_layers(Side("a", layers=[la]), Side("b", layers=[lb]))
    why = {c["path"]: c["why"] for c in d["layers"][0]["files"]["changed"]}
    assert why["usr/lib/x.so"].startswith("ELF sections differ: .rodata")
    assert "only the .pyc header differs" in why["m.pyc"]
    assert why["notes.txt"] == "first difference at byte 4 (line 2)"
    text = "\n".join(render(d))
    assert "declared not reproducible: build-x: nvcc names" in text and "ELF sections differ: .rodata" in text


def test_a_new_tool_version_is_the_images_own_change_between_locks():
    from enginefab.assemble.churn import compare_image

    defn = demo_definition("demo-pytorch-x86_64")
    step = Input(kind="run", name="s", version="1", url=None, sha256="0" * 64, size=1, script="true")
    gcc = next(i for i in defn.inputs() if i.kind == "deb").model_copy(update={"name": "gcc", "version": "10.2.1-6"})
    newer = gcc.model_copy(update={"version": "10.2.1-7", "sha256": "1" * 64})
    old = defn.model_copy(update={"layers": [*defn.layers, _layer("run", "run/s", "c", [step], tools=[gcc])]})
    new = defn.model_copy(update={"layers": [*defn.layers, _layer("run", "run/s", "c", [step], tools=[newer])]})
    row = compare_image(old, new)
    assert row["digest_changes"] and not row["churn"]  # not a re-plan: what the step was built with changed
    assert "gcc (tool) 10.2.1-6 → 10.2.1-7" in row["why"]
    assert row["layers"]["added"][0]["why"] == "gcc (tool) 10.2.1-6 → 10.2.1-7"
