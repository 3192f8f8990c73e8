"""Definition level: realistic wrong combinations are rejected with a message that names the
image, the field and the source of the fact.

Image rules are tested by breaking engines/ (its parsed tables given to `Matrix.from_data`, or a
copy of the tree where an image is added as text; loading the matrix refuses it); locked
rules by changing one pin in a copy of a real definition from build/ (as a resolver or a human
could) and checking it.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from enginefab.core.definition import Definition
from enginefab.core.errors import MatrixError
from enginefab.engines import rules
from enginefab.engines.matrix import Matrix, load

from .conftest import ROOT, cli


def refusal(proj: Path) -> str:
    with pytest.raises(MatrixError) as e:
        load(proj)
    return str(e.value)




# -- image rules: the matrix refuses these -------------------------------------------------------
# (platforms.toml edited as parsed tables, handed to Matrix.from_data: no copy of the tree)

def tables() -> dict[str, dict]:
    """The parsed tables of engines/*.toml, by file name (a fresh copy to edit)."""
    return {p.name: tomllib.loads(p.read_text()) for p in sorted((ROOT / "engines").glob("*.toml"))}


def set_field(t: dict, path: str, old: str, new: str) -> None:
    """Set the value at `path` (keys joined by '/') in the tables to `new`, after checking it is `old`."""
    *parents, key = path.split("/")
    for k in parents:
        t = t[k]
    assert t[key] == old, f"{path} is {t[key]!r}, not {old!r}"
    t[key] = new


def refusal_of(t: dict) -> str:
    with pytest.raises(MatrixError) as e:
        Matrix.from_data(ROOT, t)
    return str(e.value)


def test_cuda_stack_declaring_too_old_a_driver():
    t = tables()
    set_field(t, "platforms.toml/stack/cuda-10.2/min_driver", "440.33", "418.39")
    msg = refusal_of(t)
    assert "driver >= 418.39" in msg and "CUDA 10.2 needs driver >= 440.33" in msg and "release notes" in msg


def test_nvidia_require_cuda_for_another_toolkit():
    t = tables()
    env = t["platforms.toml"]["stack"]["cuda-10.1"]["env"]
    assert env["NVIDIA_REQUIRE_CUDA"].startswith("cuda>=10.1 ")
    env["NVIDIA_REQUIRE_CUDA"] = env["NVIDIA_REQUIRE_CUDA"].replace("cuda>=10.1", "cuda>=10.0", 1)
    msg = refusal_of(t)
    assert "NVIDIA_REQUIRE_CUDA" in msg and "cuda>=10.1" in msg


def test_cudnn_release_without_a_build_for_the_cuda():
    t = tables()
    set_field(t, "platforms.toml/stack/cuda-10.2/cudnn", "7.6.5.32", "7.4.2.24")
    msg = refusal_of(t)
    assert "cuDNN 7.4.2.24 has no build for CUDA 10.2" in msg and "cuDNN archive" in msg


def test_nccl_older_than_the_cuda():
    t = tables()
    set_field(t, "platforms.toml/stack/cuda-10.2/nccl", "2.8.4", "2.4.8")
    msg = refusal_of(t)
    assert "NCCL 2.4.8 predates CUDA 10.2" in msg and "2.5.6" in msg


def test_cudnn8_under_engines_built_against_cudnn7():
    # cuDNN 8.0 does have CUDA 10.1 builds, but TensorFlow 2.1 and MindSpore 1.3 load libcudnn.so.7
    # (TensorFlow uses the runtime stack, MindSpore the devel one)
    t = tables()
    for stack in ("cuda-10.1", "cuda-10.1-devel"):
        set_field(t, f"platforms.toml/stack/{stack}/cudnn", "7.6.5.32", "8.0.5.39")
    refusal_of(t)
    text = " ".join(v.message for v in _violations(t, "engine-cudnn"))
    assert "tensorflow 2.1.0 for CUDA 10.1 was built against cuDNN >=7.6,<8 (libcudnn.so.7)" in text
    assert "mindspore 1.3.0" in text and "tested build configurations" in text


def test_os_glibc_older_than_the_engines_need():
    t = tables()
    set_field(t, "platforms.toml/os/ubuntu-18.04/glibc", "2.27", "2.12")
    refusal_of(t)
    text = " ".join(v.message for v in _violations(t, "os-glibc"))
    assert "mindspore 1.3.0 needs glibc >= 2.17, but ubuntu-18.04 has glibc 2.12" in text
    assert "pytorch 1.8.0 needs glibc >= 2.17" in text


def test_tensorflow_2_on_a_cann_release_whose_adapter_is_for_1_15(engines_copy):
    tf = engines_copy / "engines" / "tensorflow.toml"
    text = tf.read_text()
    # someone claims a CANN build for TF 2.1.0 and adds an image for it
    text = text.replace('  { accelerator = "cuda", versions = ["10.1"], arches = ["x86_64"] },\n',
                        '  { accelerator = "cuda", versions = ["10.1"], arches = ["x86_64"] },\n'
                        '  { accelerator = "cann", versions = ["5.0.2"], arches = ["aarch64"] },\n', 1)
    text += ('\n[[image]]\nalias = "tf2-cann"\nname = "tensorflow_2.1.0-cann_5.0.2-py_3.7-euler_2.8.3-aarch64"\n'
             'engine_version = "2.1.0"\npython = "3.7"\nos = "euleros-2.8"\naccelerator = "cann-5.0.2"\narch = "aarch64"\n')
    tf.write_text(text)
    msg = refusal(engines_copy)
    assert "tf2-cann" in msg
    assert "CANN 5.0.2's tensorflow adapter supports tensorflow ==1.15.0, not 2.1.0" in msg


def test_horovod_over_a_framework_not_built_for_the_stack(engines_copy):
    hv = engines_copy / "engines" / "horovod.toml"
    text = hv.read_text()
    i = text.index('alias = "horovod-tensorflow-cuda10.1"')
    j = text.find("[[image]]", i)
    block = text[i:j]
    new = block.replace("cuda_10.1", "cuda_10.2").replace('accelerator = "cuda-10.1-devel"', 'accelerator = "cuda-10.2-devel"')
    hv.write_text(text[:i] + new + text[j:])
    msg = refusal(engines_copy)
    assert "horovod-tensorflow-cuda10.1" in msg
    assert "TensorFlow 2.1.0 (under Horovod) was not built for cuda 10.2" in msg


def _violations(t: dict, rule_id: str) -> list[rules.Violation]:
    """The violations of one rule in a matrix that does not load (collected, not raised)."""
    seen = Matrix.from_data(ROOT, t, strict=False).validate()
    hits = [v for v in seen if v.rule == rule_id]
    assert hits, f"rule {rule_id} did not fire: {[v.rule for v in seen]}"
    return hits


# -- locked rules: one pin changed in a real definition --------------------------------------------

def _defn(alias: str) -> dict:
    return json.loads((ROOT / "build" / f"{alias}.json").read_text())


def _repin(doc: dict, name: str, version: str, filename: str) -> Definition:
    hits = 0
    for layer in doc["layers"]:
        for i in layer["inputs"]:
            if i["name"] == name:
                i["version"], i["filename"] = version, filename
                hits += 1
    assert hits == 1, f"{name} is locked {hits} times"
    return Definition.model_validate(doc)


def _locked(matrix, alias: str, defn: Definition) -> dict[str, str]:
    img = matrix.get(alias)
    vs = rules.check_locked(img, defn, rules.Context.of(matrix))
    return {v.rule: " ".join(x.message for x in vs if x.rule == v.rule) for v in vs}


def test_the_real_locks_pass_every_locked_rule(matrix):
    from enginefab.core.definition import load_definition

    for img in matrix.images:
        defn = load_definition(ROOT / "build" / f"{img.alias}.json")
        assert rules.check_locked(img, defn, rules.Context.of(matrix)) == [], img.alias


@pytest.mark.parametrize("alias,name,version,filename,rule,expect", [
    # protobuf 4 (3.21) under TF 2.1: "Descriptors cannot not be created directly"
    ("tensorflow-cuda10.1", "protobuf", "4.21.12", "protobuf-4.21.12-cp37-abi3-manylinux2014_x86_64.whl",
     "known-broken", r"protobuf 4\.21\.12 with tensorflow 2\.1\.0 .*tensorflow/tensorflow#56266"),
    # h5py 3 under TF 2.1: Keras load_model breaks
    ("tensorflow-cuda10.1", "h5py", "3.1.0", "h5py-3.1.0-cp37-cp37m-manylinux1_x86_64.whl",
     "known-broken", r"h5py 3\.1\.0 with tensorflow 2\.1\.0 .*#44467"),
    # numpy 1.20 under TF 2.1: RNNs break
    ("tensorflow-cuda10.1", "numpy", "1.20.3", "numpy-1.20.3-cp37-cp37m-manylinux2010_x86_64.whl",
     "known-broken", r"numpy 1\.20\.3 with tensorflow 2\.1\.0 .*#47263"),
    # NumPy 2 under torch 1.8 (built against the NumPy 1 ABI)
    ("demo-pytorch-x86_64", "numpy", "2.0.2", "numpy-2.0.2-cp39-cp39-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
     "known-broken", r"numpy 2\.0\.2 with pytorch 1\.8\.0 .*NumPy 2"),
    # gast 0.4 under TF 1.13.1 (which declares only gast>=0.2.0)
    ("kungfu-tf1.13", "gast", "0.4.0", "gast-0.4.0.tar.gz",
     "known-broken", r"gast 0\.4\.0 with tensorflow 1\.13\.1 .*gast==0\.2\.2"),
    # the engine resolved to another version than the image names
    ("pytorch-cuda10.2", "torch", "1.8.1", "torch-1.8.1-cp37-cp37m-manylinux1_x86_64.whl",
     "engine-pinned", r"PyTorch is locked at torch 1\.8\.1 .* but the image is PyTorch 1\.8\.0"),
    # pytorch.org's CUDA 11.1 build of the same version in a CUDA 10.2 image
    ("pytorch-cuda10.2", "torch", "1.8.0+cu111", "torch-1.8.0+cu111-cp37-cp37m-linux_x86_64.whl",
     "engine-cuda-flavour", r"built for CUDA 11\.1, but the image's stack is cuda 10\.2"),
    # a manylinux_2_28 wheel (Pillow publishes both) on Ubuntu 18.04's glibc 2.27
    ("pytorch-cuda10.2", "pillow", "9.5.0", "Pillow-9.5.0-cp37-cp37m-manylinux_2_28_x86_64.whl",
     "wheel-fits", r"needs glibc >= 2\.28 .* the OS has 2\.27"),
    # an x86_64 wheel locked into the aarch64 image
    ("demo-pytorch-aarch64", "numpy", "1.21.6", "numpy-1.21.6-cp39-cp39-manylinux_2_12_x86_64.manylinux2010_x86_64.whl",
     "wheel-fits", r"built for manylinux2010_x86_64, manylinux_2_12_x86_64, not aarch64"),
    # a wheel for another Python
    ("tensorflow-cuda10.1", "grpcio", "1.62.3", "grpcio-1.62.3-cp38-cp38-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
     "wheel-fits", r"Python tags are cp38.*the image runs cp37m"),
])
def test_locked_wrong_combination_is_rejected(matrix, alias, name, version, filename, rule, expect):
    found = _locked(matrix, alias, _repin(_defn(alias), name, version, filename))
    assert rule in found, found
    assert re.search(expect, found[rule]), found[rule]


def test_check_command_reports_a_known_broken_lock(engines_copy):
    """`enginefab check --level definition` on a project whose lock holds protobuf 4 under TF 2.1."""
    path = engines_copy / "build" / "tensorflow-cuda10.1.json"
    defn = _repin(json.loads(path.read_text()), "protobuf", "4.21.12", "protobuf-4.21.12-cp37-abi3-manylinux2014_x86_64.whl")
    path.write_bytes(defn.to_json())
    junit = engines_copy / "report.xml"
    p = cli("check", "tensorflow-cuda10.1", "--level", "definition", "--json", "--junit", str(junit),
                  cwd=engines_copy)
    assert p.returncode == 1, p.stderr
    rep = json.loads(p.stdout)[0]
    bad = [r for r in rep["results"] if r["status"] == "fail"]
    assert [r["name"] for r in bad] == ["known-broken"]
    assert "constrain protobuf<3.21" in bad[0]["data"]["fix"][0]
    assert "known-broken" in junit.read_text() and "<failure" in junit.read_text()


def test_every_rule_cites_a_source():
    for r in [*rules.RULES, *rules.LOCKED_RULES]:
        assert r.source and r.statement, r.id
    from enginefab.engines import compat

    facts = compat.compat(ROOT)
    assert facts.cuda and all(f.source for f in facts.cuda.values())
    assert all(e.source for e in facts.engine) and all(c.source for c in facts.cann.values())
    broken = compat.known_broken(ROOT).broken
    assert len(broken) >= 8 and all(b.source and b.fix and b.symptom for b in broken)


def test_a_typo_in_the_compat_table_is_an_error(engines_copy):
    p = engines_copy / "engines" / "checks" / "compat.toml"
    p.write_text(p.read_text().replace('min_driver = "418.39"', 'min_drivr = "418.39"'))
    msg = refusal(engines_copy)
    assert "compat.toml" in msg and "min_drivr" in msg
