"""Static level on a preset whose base is out of reach: its PyPI engine layers are staged and
audited against the declared base facts, with real findings.

CI audits kungfu-tf1.13 for real (tensorflow_gpu 1.13.1, 345 MB, downloaded once per machine into
~/.cache/enginefab): TF 1.13 links the CUDA 10.0 libraries directly, so every soname it needs
from the stack is read from its own DT_NEEDED entries. The other presets are audited by hand with
`enginefab check --level static <alias>` (README, Compatibility checks).
"""

from __future__ import annotations

import json

import pytest

from .conftest import enginefab


@pytest.fixture(scope="module")
def kungfu_report(tmp_path_factory):
    store = tmp_path_factory.mktemp("preset-store")
    p = enginefab("check", "kungfu-tf1.13", "--level", "static", "--store", str(store), "--json")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return {r["name"]: r for r in json.loads(p.stdout)[0]["results"]}


@pytest.mark.slow
def test_preset_engine_layers_are_audited_against_the_declared_base(kungfu_report):
    res = kungfu_report
    assert res["image"]["status"] == "skip" and "cannot be built here" in res["image"]["detail"]
    layers = res["engine-layers"]
    assert layers["status"] == "pass"
    assert "wheel/tensorflow-gpu-1.13.1-a709274c" in layers["data"]["audited"]
    assert layers["data"]["wheel_bytes"] > 345_000_000
    skipped = layers["data"]["skipped"]
    assert any(k.startswith("base/") for k in skipped) and any("KungFu" in v or "kungfu" in k for k, v in skipped.items())
    assert res["elf-arch"]["status"] == "pass" and res["wheel-tags"]["status"] == "pass"
    assert res["dist-versions"]["status"] == "pass"


@pytest.mark.slow
def test_tensorflow_1_13_needs_the_cuda_10_0_stack_and_the_stack_provides_it(kungfu_report):
    stack = kungfu_report["stack-sonames"]
    assert stack["status"] == "pass", stack["detail"]
    needs = stack["data"]["needs"]
    for so in ("libcudart.so.10.0", "libcublas.so.10.0", "libcusolver.so.10.0", "libcudnn.so.7",
               "libcufft.so.10.0", "libcurand.so.10.0"):
        assert so in needs and needs[so].startswith("DT_NEEDED by /opt/conda/lib/python3.6/site-packages/tensorflow/"), so
        assert so in stack["data"]["stack"]
    dt = kungfu_report["dt-needed"]
    assert dt["status"] == "pass"
    assert "by the host driver" in dt["detail"] and "0 by the host driver" not in dt["detail"]  # libcuda.so.1
    # contrib.tensorrt needs TensorRT 5, which no CUDA base image ships: reported as optional
    assert "libnvinfer.so.5 (TensorRT 5 is optional" in dt["detail"]
    glibc = kungfu_report["glibc"]
    assert glibc["status"] == "pass" and glibc["data"]["max"] <= "2.27"
