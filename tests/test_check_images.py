"""Static, runtime and accelerator levels on real images: the two demo images pass; deliberately
broken variants of the demos (built here from modified definitions: the aarch64 one, and a small
layer over the x86_64 one) fail with a reason a user can act on; the real container-structure-test agrees with our file and metadata tests;
reports are deterministic JSON and valid JUnit.

The demo images come from the session `demo_build` fixture; the variants reuse its store, so only
their changed layers are built and only those are unpacked on top of the demo's rootfs.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from enginefab.assemble import rootfs
from enginefab.assemble.builder import Builder
from enginefab.assemble.store import Store
from enginefab.check import container, runner
from enginefab.check.report import Report, Result, junit
from enginefab.core.definition import Definition, Input, Layer, load_definition

from .conftest import ROOT, enginefab, session_for

AARCH64 = "demo-pytorch-aarch64"
X86 = "demo-pytorch-x86_64"


@pytest.fixture(scope="module")
def demo_reports(demo_build, tmp_path_factory):
    """Both demo images checked at every level once, through the CLI, with JSON and JUnit reports
    (container-structure-test cross-checks the aarch64 one here; see the README for the other)."""
    from concurrent.futures import ThreadPoolExecutor

    out = tmp_path_factory.mktemp("reports")
    store = str(demo_build["store"])
    with ThreadPoolExecutor(2) as pool:  # qemu-bound and unpack-bound: the two overlap well on 2 cores
        a = pool.submit(enginefab, "check", AARCH64, "--store", store, "--json", "--junit", str(out / "a.xml"),
                        "--reports", str(out / "json"), "--cross-check")
        x = pool.submit(enginefab, "check", X86, "--store", store, "--json", "--junit", str(out / "x.xml"),
                        "--reports", str(out / "json"))
        p, q = a.result(), x.result()
    return {"a": (p, json.loads(p.stdout)[0]), "x": (q, json.loads(q.stdout)[0]), "dir": out}


def _by_name(rep: dict) -> dict[str, dict]:
    return {r["name"]: r for r in rep["results"]}


def test_demo_images_pass_every_level_here(demo_reports, demo_build):
    for key, alias in (("a", AARCH64), ("x", X86)):
        p, rep = demo_reports[key]
        assert p.returncode == 0, p.stderr[-3000:]
        assert rep["digest"] == demo_build["digests"][alias] and rep["ok"]
        assert set(rep["levels"]) == {"definition", "static", "runtime", "accelerator"}
        res = _by_name(rep)
        for name in ("elf-arch", "glibc", "dt-needed", "wheel-tags", "dist-versions", "modelarts-conventions",
                     "import-pytorch", "built-for-pytorch", "command:python-as-ma-user", "content:torch-version",
                     "known-broken", "wheel-fits", "engine-pinned"):
            assert res[name]["status"] == "pass", (alias, res[name])
        assert res["import-pytorch"]["data"]["version"] == "1.8.0"
        assert "numpy bridge ok" not in res["import-pytorch"]["detail"]  # stdout stays out of the report detail
        assert res["import-pytorch"]["detail"].endswith(": matmul ok 22.0")  # but for what the smoke computed
        assert res["compat-known"]["status"] == "pass" and rep["counts"]["warn"] == 0
        assert res["import-pytorch"]["data"]["output"].startswith("matmul ok 22.0\n")  # ... and is in its data
        assert res["writable-dirs"]["status"] == "pass", res["writable-dirs"]
        assert res["writable-dirs"]["detail"] == "wrote to tmp /tmp, shm /dev/shm, home /home/ma-user as uid 1000"
        assert res["command:python-as-ma-user"]["data"]["stdout"].startswith("ids 1000 100")
        accel = [r for r in rep["results"] if r["level"] == "accelerator"]
        assert accel and all(r["status"] == "skip" and r["detail"] for r in accel)
        assert rep["checks"]["engines/checks/pytorch.yaml"] and rep["checks"]["engines/checks/known-broken.toml"]


def test_an_engine_without_its_own_checks_file_is_a_warning(demo_build, engines_copy):
    (engines_copy / "engines" / "checks" / "pytorch.yaml").unlink()
    defn = load_definition(ROOT / "build" / f"{AARCH64}.json")
    store = Store(demo_build["store"])
    res = runner.check_built(defn, store, Builder(store, session=session_for()).image(defn), engines_copy, levels=["static"])
    (warn,) = [r for r in res if r.name == "checks-file"]
    assert warn.status == "warn" and "engines/checks/pytorch.yaml does not exist" in warn.detail
    assert "only common.yaml's checks ran" in warn.detail


def test_the_engine_reports_the_cuda_it_was_built_for(demo_reports):
    x = _by_name(demo_reports["x"][1])["built-for-pytorch"]
    assert x["data"]["reported"] == {"cuda": "10.2"} and x["status"] == "pass"  # torch.version.cuda, the wheel's CUDA
    a = _by_name(demo_reports["a"][1])["built-for-pytorch"]
    assert a["data"]["reported"] == {"cuda": "None"} and a["status"] == "pass"  # the aarch64 wheel is CPU-only
    # the x86_64 image needs only the host driver from outside: libcuda.so.1
    assert "1 by the host driver" in _by_name(demo_reports["x"][1])["dt-needed"]["detail"]
    assert _by_name(demo_reports["a"][1])["elf-arch"]["detail"].endswith("are aarch64")


def test_accelerator_tests_run_on_the_device_or_say_why_not(demo_reports, matrix):
    from enginefab.check import accelerator

    x = {r["name"]: r for r in demo_reports["x"][1]["results"] if r["level"] == "accelerator"}
    assert sorted(x) == ["cuda-collective", "cuda-device", "cuda-op"]
    why = accelerator.gpu_present()
    if why is None:  # a machine with an NVIDIA GPU: the tests really ran on it
        assert all(r["status"] == "pass" for r in x.values()), x
    else:
        assert all(r["status"] == "skip" and r["detail"] == f"skipped: {why}" for r in x.values())
    a = [r for r in demo_reports["a"][1]["results"] if r["level"] == "accelerator"]
    assert [(r["status"], r["detail"]) for r in a] == [("skip", "CPU image: no accelerator to test")]
    # an Ascend image: device, op and HCCL tests exist for MindSpore, and say why they did not run
    npu = accelerator.check(matrix.get("mindspore-cann5.0.2"))
    assert [r.name for r in npu] == ["cann-device", "cann-op", "cann-collective"]
    if accelerator.npu_present():
        assert all(r.status == "skip" and "Ascend" in r.detail for r in npu)


def test_container_structure_test_agrees_on_files_and_metadata(demo_reports):
    res = _by_name(demo_reports["a"][1])
    cst = {k: v for k, v in res.items() if k.startswith("cst:")}
    ours = {k for k in res if k.startswith(("file:", "content:"))}
    assert len(cst) == len(ours) + 1  # each of our file tests, and the metadata test
    assert all(v["status"] == "pass" for v in cst.values())
    assert res["container-structure-test"]["data"] == {"pass": len(cst), "fail": 0}


def test_junit_reports_are_valid(demo_reports):
    for name in ("a.xml", "x.xml"):
        root = ET.parse(demo_reports["dir"] / name).getroot()
        assert root.tag == "testsuites"
        suites = root.findall("testsuite")
        assert len(suites) == 1
        s = suites[0]
        cases = s.findall("testcase")
        assert int(s.get("tests")) == len(cases) > 20
        assert int(s.get("skipped")) == len([c for c in cases if c.find("skipped") is not None]) >= 1
        assert int(s.get("failures")) == len([c for c in cases if c.find("failure") is not None]) == 0
        for c in cases:
            assert c.get("classname").split(".")[-1] in ("definition", "static", "runtime", "accelerator")
            assert c.get("name") and float(c.get("time")) >= 0


def test_json_report_is_the_deterministic_referrer_payload(demo_reports):
    raw = (demo_reports["dir"] / "json" / f"{AARCH64}.json").read_bytes()
    doc = json.loads(raw)
    assert doc["reportType"] == "enginefab.check/v1" and doc["image"] == AARCH64
    rep = Report(doc["image"], doc["name"], doc["digest"], checks=doc["checks"],
                 results=[Result(**{**r, "seconds": 99.0}) for r in doc["results"]])
    assert rep.to_json() == raw  # timings are not in the bytes; everything else round-trips exactly
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# -- broken variants of the aarch64 demo -----------------------------------------------------

def _variant(extra_layers: list[Layer] = (), drop: str | None = None, alias: str = AARCH64) -> Definition:
    doc = json.loads((ROOT / "build" / f"{alias}.json").read_text())
    if drop:
        for layer in doc["layers"]:
            layer["inputs"] = [i for i in layer["inputs"] if i["name"] != drop]
    doc["layers"] += [x.model_dump(mode="json", exclude_none=True) for x in extra_layers]
    return Definition.model_validate(doc)


def _check(demo_build, defn: Definition, levels=("static", "runtime")) -> dict[str, Result]:
    store = Store(demo_build["store"])
    built = Builder(store, session=session_for()).image(defn)
    assert built.digest not in demo_build["digests"].values()
    results = runner.check_built(defn, store, built, ROOT, levels=list(levels))
    return {r.name: r for r in results}


def _x86_libstdcxx(tmp_path: Path) -> Path:
    """libstdc++.so.6.0.28 from the x86_64 demo's own (cached) libstdc++6 deb."""
    from enginefab.assemble.builder import fetch_input
    from enginefab.assemble.debs import stage_deb
    from enginefab.assemble.staging import Staging

    x86 = load_definition(ROOT / "build" / f"{X86}.json")
    deb = next(i for i in x86.inputs() if i.name == "libstdc++6")
    st = Staging(tmp_path / "deb")
    st.root.mkdir()
    stage_deb(st, fetch_input(deb, X86, session_for()), deb)
    return next((st.root / "usr/lib/x86_64-linux-gnu").glob("libstdc++.so.6.0.[0-9]*[0-9]"))


def test_wrong_arch_library_fails_static_and_runtime_with_the_reason(demo_build, tmp_path):
    import tarfile

    so = _x86_libstdcxx(tmp_path)
    tgz = tmp_path / "x86-libstdcxx.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:  # an extra layer puts it where the aarch64 one is
        tf.add(so, arcname=f"usr/lib/aarch64-linux-gnu/{so.name}")
    import hashlib

    data = tgz.read_bytes()
    inp = Input(kind="url", name="x86-libstdcxx", version="1", url=tgz.as_uri(), sha256=hashlib.sha256(data).hexdigest(),
                size=len(data), filename=tgz.name, dest="/", unpack=True)
    res = _check(demo_build, _variant([Layer(id="files/x86-libstdcxx", kind="archives", inputs=[inp])]))
    assert res["elf-arch"].status == "fail"
    assert f"/usr/lib/aarch64-linux-gnu/{so.name} (EM_X86_64)" in res["elf-arch"].detail
    run = res["import-pytorch"]
    assert run.status == "fail"
    assert f"libstdc++.so.6 is in the image but built for another machine: /usr/lib/aarch64-linux-gnu/" in run.detail
    assert "x86_64 ELF (EM_X86_64)" in run.detail and "the image is aarch64" in run.detail


def test_missing_soname_fails_static_and_runtime_naming_it(demo_build):
    # torch's libraries need libstdc++.so.6 from the system (its own libgomp is bundled in the
    # wheel, so dropping libgomp1 would break nothing); drop the package that provides it
    res = _check(demo_build, _variant(drop="libstdc++6"))
    dt = res["dt-needed"]
    assert dt.status == "fail" and "unresolved sonames: libstdc++.so.6 (needed by " in dt.detail
    assert "dist-packages/torch/" in json.dumps(dt.data["unresolved"]["libstdc++.so.6"])
    run = res["import-pytorch"]
    assert run.status == "fail"
    assert "libstdc++.so.6 is not in the image: no package or wheel provides it" in run.detail
    assert res["command:python-as-ma-user"].status == "pass"  # Python itself still works


def test_engine_version_differing_from_the_pin_fails_with_both_versions(demo_build):
    # a layer on top replaces torch/version.py, as a later `pip install torch==…` would. On the
    # x86_64 demo: only that small layer is built and applied over the demo's unpacked rootfs,
    # and torch imports natively (under qemu the import alone takes ~20 s)
    site = "/usr/local/lib/python3.9/dist-packages"
    store = Store(demo_build["store"])
    demo = Builder(store, session=session_for()).image(load_definition(ROOT / "build" / f"{X86}.json"))
    assert demo.digest == demo_build["digests"][X86]
    original = (rootfs.unpacked(store, demo) / site.lstrip("/") / "torch/version.py").read_text()
    assert "__version__ = '1.8.0'" in original
    patched = original.replace("__version__ = '1.8.0'", "__version__ = '1.8.1'")
    layer = Layer(id="files/torch-version", kind="files",
                  files=[{"path": f"{site}/torch/version.py", "content": patched, "mode": 0o644}])
    res = _check(demo_build, _variant([layer], alias=X86))
    run = res["import-pytorch"]
    assert run.status == "fail" and run.detail.splitlines()[0] == "pytorch is 1.8.1, the pin is 1.8.0"
    assert run.data["version"] == "1.8.1"
    assert res["content:torch-version"].status == "fail" and "__version__ = '1.8.0'" in res["content:torch-version"].detail
    assert res["elf-arch"].status == "pass" and res["dt-needed"].status == "pass"  # nothing else is wrong


def test_a_failing_probe_names_the_exception_its_cause_and_the_whole_log(demo_build):
    """torch's import raises an error chained to its cause (as TensorFlow's did when it found no
    temporary directory): the result says both, where, and keeps every line of the output."""
    site = "/usr/local/lib/python3.9/dist-packages"
    code = ("import sys\nfor i in range(60):\n    print('noise line', i, file=sys.stderr)\n"
            "def find():\n    raise FileNotFoundError(2, 'No usable temporary directory found in /nowhere')\n"
            "try:\n    find()\nexcept OSError as e:\n    raise ImportError('torch cannot start') from e\n")
    layer = Layer(id="files/torch-broken", kind="files",
                  files=[{"path": f"{site}/torch/__init__.py", "content": code, "mode": 0o644}])
    res = _check(demo_build, _variant([layer], alias=X86))
    run = res["import-pytorch"]
    assert run.status == "fail"
    lines = run.detail.splitlines()
    assert lines[0] == "exit 1: ImportError: torch cannot start"
    assert lines[1] == f"  at {site}/torch/__init__.py:9, in <module>"
    assert lines[2] == "  caused by: FileNotFoundError: [Errno 2] No usable temporary directory found in /nowhere"
    assert lines[3] == f"    at {site}/torch/__init__.py:5, in find"
    log = Path(run.data["log"])
    assert lines[-1] == f"the whole output: {log}" and log.parent == demo_build["store"] / "logs"
    text = log.read_text()
    assert "noise line 0\n" in text and "noise line 59\n" in text and "Traceback (most recent call last)" in text
    assert "noise line" not in run.detail


@pytest.mark.parametrize("alias", [X86, AARCH64])
def test_the_image_user_writes_tmp_shm_and_home(demo_build, alias):
    """What TensorFlow's import needs (tempfile.gettempdir()), shared memory and the home, as
    uid 1000 — where a container runtime gives them: a 1777 /tmp and /dev/shm, the home of the
    image, writable in a layer of the container's own; the unpacked image stays as it was."""
    store = Store(demo_build["store"])
    defn = load_definition(ROOT / "build" / f"{alias}.json")
    root = rootfs.unpacked(store, Builder(store, session=session_for()).image(defn))
    code = ("import os, stat, tempfile\n"
            "for d in (tempfile.gettempdir(), '/dev/shm', os.path.expanduser('~'), '/var/tmp'):\n"
            "    with open(os.path.join(d, 'probe.txt'), 'w') as f:\n"
            "        f.write('x')\n"
            "    st, top = os.stat(os.path.join(d, 'probe.txt')), os.stat(d)\n"
            "    print(d, st.st_uid, st.st_gid, oct(stat.S_IMODE(top.st_mode)))\n"
            "print('cwd', os.getcwd(), 'ids', os.getuid(), os.getgid(), os.getgroups())\n")
    r = container.run(defn, root, [defn.python.interpreter, "-c", code])
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["/tmp 1000 100 0o1777", "/dev/shm 1000 100 0o1777",
                                     "/home/ma-user 1000 100 0o750", "/var/tmp 1000 100 0o1777",
                                     "cwd /home/ma-user ids 1000 100 [100]"]
    assert not (root / "home/ma-user/probe.txt").exists()


def test_podman_runs_the_x86_64_demo_and_agrees_with_our_sandbox(demo_build):
    """A real OCI runtime (podman with runc, its storage in a temporary directory) runs the engine
    probe in the x86_64 demo: the same version, output, identity and writable directories."""
    p = enginefab("check", X86, "--level", "runtime", "--cross-check", "--store", str(demo_build["store"]), "--json")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = _by_name(json.loads(p.stdout)[0])
    pod = res["podman:import-pytorch"]
    assert pod["status"] == "pass", pod
    assert pod["detail"] == "podman (runc) agrees: pytorch 1.8.0 as [1000, 100, [100], \"/home/ma-user\"], printed 'matmul ok 22.0'"
    theirs = pod["data"]["podman"]
    assert theirs["version"] == "1.8.0" and theirs["built_for"] == {"cuda": "10.2"} and theirs["ok"]
    assert theirs["output"] == res["import-pytorch"]["data"]["output"]
    assert theirs["writable"] == {"tmp": "ok", "shm": "ok", "home": "ok"}
    assert not list((demo_build["store"] / "tmp").glob("enginefab-podman-*"))  # podman's storage is gone
