"""Horovod built from its sdist in a run step: what its checks ask of each image, and (slow) the
part of the compile that fits the suite — Horovod's CMake configure against the x86_64 demo's
torch 1.8.0 in the sandbox with the image's build-only tools. The whole compile (about 15 min on
this shared 2-core machine) and its `horovodrun --check-build` are `bench/horovod.py`."""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile

import pytest

from enginefab.assemble.rootfs import open_layer
from enginefab.check import runtime, structure
from enginefab.core.definition import Layer, load_definition
from enginefab.engines.model import RunStep
from enginefab.lock.declared import run_input

from .conftest import ROOT, definition_file, enginefab

CPU = "demo-horovod-x86_64"
CUDA = "horovod-pytorch-cuda10.2"


def _defn(alias: str):
    return load_definition(ROOT / "build" / f"{alias}.json")


def _check_build(suite: structure.Suite) -> list[structure.CommandTest]:
    return [t for t in suite.commandTests if t.args == ["--check-build"]]


def test_check_build_asks_every_image_for_its_framework_and_gloo_and_nccl_only_where_the_stack_has_it():
    cpu, cuda = (_check_build(structure.load(ROOT, _defn(a))) for a in (CPU, CUDA))
    assert [t.name for t in cpu] == ["horovodrun-check-build"]
    assert [t.name for t in cuda] == ["horovodrun-check-build", "horovodrun-check-build-nccl"]
    assert cpu[0].command == "/usr/local/bin/horovodrun" and cuda[0].command == "/opt/conda/bin/horovodrun"
    # the patterns as rendered for the image: its framework and Gloo ticked, not merely named
    listing = "Available Frameworks:\n    [ ] TensorFlow\n    [{t}] PyTorch\n\nAvailable Controllers:\n    [{g}] Gloo    \n"
    for t, g, ok in (("X", "X", True), (" ", "X", False), ("X", " ", False)):
        out = listing.format(t=t, g=g)
        assert all(re.search(p, out) for p in cpu[0].expectedOutput) is ok, (out, cpu[0].expectedOutput)


def test_each_engine_probe_runs_its_own_checks_file_and_the_framework_files_test_the_framework_version():
    defn = _defn(CPU)
    suite = structure.load(ROOT, defn)
    probes = {c.engine: runtime.probe_code(c, suite) for c in defn.checks.runtime}
    assert set(probes) == {"horovod", "pytorch"}
    assert "import horovod" in probes["horovod"] and "torch." not in probes["horovod"]
    assert "torch.version.cuda" in probes["pytorch"] and "torch.from_numpy" in probes["pytorch"]
    # pytorch.yaml under Horovod checks torch 1.8.0, not a torch of Horovod's version
    files = {t.name: t.path for t in suite.fileExistenceTests}
    assert files["torch-dist-info"].endswith("/torch-1.8.0.dist-info/METADATA")
    content = {t.name: t.expectedContents for t in suite.fileContentTests}
    assert "(?m)^__version__ = '1.8.0'$" in content["torch-version"]


#: the image's own step up to CMake's configure: /bin/sh, the sdist unpacked in the build directory,
#: CMake run as Horovod's setup.py runs it; what it found is kept in the image to be read back
#: (with Python: the demo has no grep)
CONFIGURE = """set -e
ln -s bash /bin/sh
python3.9 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(".")' /enginefab/inputs/horovod-0.22.1.tar.gz
mkdir b && cd b
cmake ../horovod-0.22.1 -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_LIBRARY_OUTPUT_DIRECTORY_RELWITHDEBINFO="$PWD/lib" \\
  -DPYTHON_EXECUTABLE:FILEPATH=/usr/bin/python3.9 > configure.log
python3.9 -c 'import os, sys; sys.stdout.write("".join(ln for ln in open("configure.log") if "Found Pytorch" in ln))
[print(p) for p in sys.argv[1:] if os.path.exists(p)]' horovod/torch/Makefile third_party/gloo/gloo/Makefile \\
  third_party/compatible_gloo/gloo/Makefile > /root/horovod-configure.txt
"""


def _layer_files(store, digest: str) -> dict[str, bytes | None]:
    with open_layer(store / "blobs/sha256" / digest.split(":")[1], "application/vnd.oci.image.layer.v1.tar+gzip") as f, \
            tarfile.open(fileobj=f, mode="r|") as tf:
        return {m.name.rstrip("/"): (tf.extractfile(m).read() if m.isfile() else None) for m in tf}  # type: ignore


@pytest.mark.network
def test_horovod_configures_against_the_demo_torch_with_build_only_tools(demo_build, tmp_path):
    """The demo-horovod-x86_64 step's tools and env over the x86_64 demo's own layers (OS, Python,
    libgomp1, NumPy, typing-extensions, torch: cached in the demo's store), the step cut after
    CMake's configure."""
    defn = load_definition(ROOT / "build" / f"{CPU}.json")
    run = next(la for la in defn.layers if la.kind == "run")
    real = next(i for i in run.inputs if i.kind == "run")
    step = run_input(RunStep(name="configure-horovod", script=CONFIGURE, env=real.env or {}))
    layer = Layer(id="run/configure-horovod", kind="run", inputs=[i for i in run.inputs if i.kind != "run"] + [step],
                  tools=run.tools, comment="Horovod's configure only")
    lower = [la for la in load_definition(ROOT / "build" / "demo-pytorch-x86_64.json").layers if la.kind != "config"]
    path = definition_file(defn.model_copy(update={"layers": [*lower, layer]}), tmp_path / "configure.json")
    store = tmp_path / "store"
    shutil.copytree(demo_build["store"], store, copy_function=os.link, ignore=shutil.ignore_patterns("rootfs", "tmp", "roots"))
    p = enginefab("build", str(path), "--store", str(store), "--out", str(tmp_path / "out"), "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    results = json.loads(p.stdout)[0]["layer_results"]
    assert [r["status"] for r in results[:-1]] == ["cached"] * len(lower)   # the demo's blobs, not rebuilt
    files = _layer_files(store, results[-1]["digests"][0])
    found = (files["root/horovod-configure.txt"] or b"").decode()
    # the torch ops and Gloo are configured, Gloo also for torch 1.8's pre-C++11 ABI (compatible_gloo)
    assert "Found Pytorch: 1.8.0" in found and "horovod/torch/Makefile" in found, found
    assert "third_party/gloo/gloo/Makefile" in found and "third_party/compatible_gloo/gloo/Makefile" in found, found
    # the layer: the /bin/sh link and what the step wrote to /root, nothing of the tools or the build
    assert set(files) == {"bin", "bin/sh", "root", "root/horovod-configure.txt"}, sorted(files)
