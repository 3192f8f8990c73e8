"""Horovod built from its sdist in a run step: what its checks ask of each image, and (slow) the
CPU/Gloo image over the x86_64 demo's PyTorch compiled here and checked with `horovodrun --check-build`."""

from __future__ import annotations

import re

from enginefab.check import runtime, structure
from enginefab.core.definition import load_definition

from .conftest import ROOT

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
