"""Checks say what they did: what the engine reports it was built for, against the image's
accelerator (a "cpu" image whose engine is a CUDA build is a warning); a builtFor expression that
fails on a release is a failure; an engine compat.toml does not know is a warning, not a pass."""

from __future__ import annotations

import json

from enginefab.check import runtime
from enginefab.check.report import Report, Result, junit
from enginefab.core.definition import load_definition

from .conftest import ROOT, cli

AARCH64, X86 = "demo-pytorch-aarch64", "demo-pytorch-x86_64"


def _defn(alias):
    return load_definition(ROOT / "build" / f"{alias}.json")


def test_a_cpu_image_whose_engine_is_a_cuda_build_is_a_warning_naming_the_cpu_build():
    cpu = _defn(AARCH64)  # accelerator "cpu"
    r = runtime.built_for_result("tensorflow", "2.16.2", cpu, "ENGINEFAB-BUILT-FOR cuda 12.3\n")
    assert r.status == "warn" and "CUDA 12.3 build" in r.detail and "tensorflow-cpu" in r.detail
    assert r.data["reported"] == {"cuda": "12.3"} and r.data["expected"] == {"cuda": "None"}
    ok = runtime.built_for_result("tensorflow", "2.16.2", cpu, "ENGINEFAB-BUILT-FOR cuda None\n")
    assert ok.status == "pass"


def test_a_cuda_image_whose_engine_is_not_that_cuda_build_fails():
    cuda = _defn(X86)  # cuda 10.2
    for said in ("None", "11.1"):
        r = runtime.built_for_result("pytorch", "1.8.0", cuda, f"ENGINEFAB-BUILT-FOR cuda {said}\n")
        assert r.status == "fail" and f"built for cuda {said}" in r.detail and "cuda 10.2" in r.detail
    assert runtime.built_for_result("pytorch", "1.8.0", cuda, "ENGINEFAB-BUILT-FOR cuda 10.2\n").status == "pass"


def test_mindspore_device_target_is_compared_with_the_accelerator():
    cpu = _defn(AARCH64)
    r = runtime.built_for_result("mindspore", "2.2.14", cpu, "ENGINEFAB-BUILT-FOR device_target Ascend\n")
    assert r.status == "fail" and "device_target Ascend" in r.detail and "(device_target CPU)" in r.detail
    assert runtime.built_for_result("mindspore", "2.2.14", cpu, "ENGINEFAB-BUILT-FOR device_target CPU\n").status == "pass"


def test_a_builtfor_expression_that_fails_on_the_release_fails_naming_the_checks_file():
    out = "ENGINEFAB-BUILT-FOR-ERROR cuda AttributeError: module 'tensorflow' has no attribute 'sysconfig'\n"
    r = runtime.built_for_result("tensorflow", "1.13.1", _defn(AARCH64), out)
    assert r.status == "fail" and "AttributeError" in r.detail and "engines/checks/tensorflow.yaml" in r.detail


def test_an_engine_without_builtfor_is_a_warning_not_a_pass():
    r = runtime.built_for_result("kungfu", "0.2.2", _defn(AARCH64), "ENGINEFAB-VERSION 0.2.2\n")
    assert r.status == "warn" and "no builtFor" in r.detail and "engines/checks/kungfu.yaml" in r.detail


def test_the_probe_reports_a_failing_builtfor_expression_instead_of_dying():
    """The generated probe code, run by this Python with a stand-in engine module."""
    import subprocess
    import sys

    from enginefab.check.structure import Extension, Suite

    c = _defn(AARCH64).checks.runtime[0]
    suite = Suite(enginefab=Extension(builtFor={"cuda": "json.no_such_attribute", "x": "json.__name__"}))
    code = runtime.probe_code(c.model_copy(update={"import_name": "json", "version_expr": "'1.8.0'", "expect_version": "1.8.0",
                                                    "smoke": "print('smoked')"}), suite)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/tmp")
    assert p.returncode == 0, p.stderr
    assert "ENGINEFAB-BUILT-FOR-ERROR cuda AttributeError" in p.stdout and "ENGINEFAB-BUILT-FOR x json" in p.stdout
    assert p.stdout.index("smoked") < p.stdout.index("ENGINEFAB-SMOKE-DONE") < p.stdout.index("ENGINEFAB-OK")


def test_warnings_pass_the_report_and_show_in_junit():
    rep = Report("a", "n", None, [Result("runtime", "built-for-x", "warn", "the image says cpu")])
    assert rep.ok and rep.counts()["warn"] == 1
    assert b"warning: the image says cpu" in junit([rep]) and b"<failure" not in junit([rep])


def test_an_engine_compat_toml_does_not_know_is_a_warning_in_the_report(engines_copy):
    compat = engines_copy / "engines" / "checks" / "compat.toml"
    text = compat.read_text()
    start = text.index('[[engine]]\nengine = "pytorch"')
    compat.write_text(text[:start])  # pytorch is the last entry
    p = cli("check", AARCH64, "--level", "definition", "--json", cwd=engines_copy)
    assert p.returncode == 0, p.stderr
    res = {r["name"]: r for r in json.loads(p.stdout)[0]["results"]}
    assert res["compat-known"]["status"] == "warn"
    assert "no [[engine]] entry for pytorch 1.8.0 (cpu)" in res["compat-known"]["detail"]
    assert json.loads(p.stdout)[0]["counts"]["warn"] == 1
    known = cli("check", AARCH64, "--level", "definition", "--json", check=True)
    assert {r["name"]: r for r in json.loads(known.stdout)[0]["results"]}["compat-known"]["status"] == "pass"


def test_plan_to_a_pipe_prints_whole_names_one_row_per_layer():
    rep = json.loads(cli("plan", "--json", check=True).stdout)
    text = cli("plan", check=True).stdout  # stdout is a pipe here
    layer_rows = text.split("\n\n")[0].splitlines()[1:]
    names = [ln.split("  ")[0].split(" (")[0] for ln in layer_rows]
    assert "…" not in text
    assert sorted(names) == sorted({r["layer"] for r in rep["layers"]})  # each layer once, whole


def test_a_base_layers_blobs_are_one_row():
    from enginefab.assemble.planreport import per_layer

    rows = [{"id": f"base/x@sha256:ab {n}", "layer": "base/x@sha256:ab", "kind": "base", "size": s, "saves": s,
             "images": imgs, "size_source": "pinned"} for n, s, imgs in (("a", 10, ["i", "j"]), ("b", 5, ["i", "k"]))]
    rows.append({"id": "wheel/w", "layer": "wheel/w", "kind": "wheels", "size": 1, "saves": 0, "images": ["i"],
                 "size_source": "built"})
    (base, wheel) = per_layer(rows)
    assert base["id"] == "base/x@sha256:ab" and base["blobs"] == 2 and base["size"] == 15 and base["saves"] == 15
    assert base["images"] == ["i", "j", "k"] and wheel["blobs"] == 1


def test_library_warnings_go_to_the_debug_log_not_the_terminal(tmp_path):
    """The wheel installer warns about a wheel's __pycache__ files (numpy has them): with the CLI's
    set-up, the warning lands in <cache>/logs/debug.log and stderr stays clean."""
    import subprocess
    import sys

    script = f"""
import sys
from pathlib import Path
from enginefab.cli.app import _setup
from tests.test_build_safety import stage, wheel_bytes
_setup()
st = stage(Path({str(tmp_path)!r}), "wheel", wheel_bytes({{"evil/__init__.py": b"", "evil/__pycache__/x.pyc": b"x"}}),
           "evil-1.0-py3-none-any.whl")
print(sorted(p.name for p in st.root.rglob("*")))
"""
    p = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                       env={**__import__("os").environ, "ENGINEFAB_CACHE": str(tmp_path / "cache")})
    assert p.returncode == 0, p.stderr
    assert "__init__.py" in p.stdout and "Skip installing" not in p.stderr and p.stderr == ""
    log = (tmp_path / "cache" / "logs" / "debug.log").read_text()
    assert "RuntimeWarning: Skip installing evil/__pycache__/x.pyc" in log
