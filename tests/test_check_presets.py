"""Static level on a preset whose base is out of reach: its PyPI engine layers are staged with the
builder's wheel stager and audited against the declared base facts, with real findings.

CI audits tensorflow-cuda10.1 for real (tensorflow_gpu 2.1.0, 422 MB, and its 37 dependencies,
downloaded once per machine into ~/.cache/enginefab). The other seven presets are audited by hand
with `enginefab check --level static <alias>`; the README lists what each one found.
"""

from __future__ import annotations

import json

import pytest

from .conftest import enginefab

CUDA_10_1_FOR_TF_2_1 = ("libcudart.so.10.1", "libcublas.so.10", "libcufft.so.10", "libcurand.so.10",
                        "libcusolver.so.10", "libcusparse.so.10", "libcudnn.so.7")


@pytest.fixture(scope="module")
def tf_report(tmp_path_factory):
    store = tmp_path_factory.mktemp("preset-store")
    p = enginefab("check", "tensorflow-cuda10.1", "--level", "static", "--store", str(store), "--json")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return {r["name"]: r for r in json.loads(p.stdout)[0]["results"]}


@pytest.mark.slow
def test_preset_engine_layers_are_audited_against_the_declared_base(tf_report):
    res = tf_report
    assert res["image"]["status"] == "skip" and "cannot be built here" in res["image"]["detail"]
    layers = res["engine-layers"]
    assert layers["status"] == "pass"
    assert any(a.startswith("wheel/tensorflow-gpu-2.1.0-") for a in layers["data"]["audited"])
    assert layers["data"]["wheel_bytes"] > 421_000_000
    skipped = layers["data"]["skipped"]
    assert any(k.startswith("base/docker.io/library/ubuntu@") for k in skipped)  # declared, not audited
    assert any(k.startswith("stack/cuda-10.1-") for k in skipped)  # NVIDIA's packages: declared sonames
    for name in ("elf-arch", "wheel-tags", "dist-versions", "dt-needed"):
        assert res[name]["status"] == "pass", res[name]
    assert "by the declared base" in res["dt-needed"]["detail"]
    # manylinux2010 says glibc 2.12; the binaries really need GLIBC_2.17 symbols (Ubuntu 18.04 has 2.27)
    assert res["glibc"]["data"]["max"] == "2.17"


@pytest.mark.slow
def test_tensorflow_2_1_gpu_needs_the_cuda_10_1_cudnn_7_stack_and_the_stack_provides_it(tf_report):
    stack = tf_report["stack-sonames"]
    assert stack["status"] == "pass", stack["detail"]
    needs = stack["data"]["needs"]
    for so in CUDA_10_1_FOR_TF_2_1:
        # loaded with dlopen by stream_executor's dso_loader (present in the wheel), none by DT_NEEDED
        assert needs[so].startswith("dlopen"), (so, needs.get(so))
        assert so in stack["data"]["stack"]
    assert "[DT_NEEDED]" not in stack["detail"]


@pytest.mark.slow
def test_old_generated_protobuf_code_is_paired_with_protobuf_3(tf_report):
    pb = tf_report["protobuf-generated-code"]
    # tensorboard 2.1's vendored _pb2 modules predate protoc 3.19: protobuf 4 would break the import
    assert pb["status"] == "pass" and pb["data"]["protobuf"] == "3.20.3" and pb["data"]["old_pb2"] > 100
