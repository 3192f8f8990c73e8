"""Accelerator level: GPU and NPU tests run where the hardware is, and say "skipped" (with the
reason) elsewhere — never a pass without the device.

Three tests per image, written per engine in engines/checks/<engine>.yaml
(``enginefab.accelerator.<cuda|cann>``): ``device`` (the engine sees the device), ``op`` (a small
computation on it) and ``collective`` (NCCL/HCCL or Horovod initialised with one rank). They run
in the same sandbox as the runtime level, with the host's device nodes and driver libraries bound
in, as the container runtime would (NVIDIA: /dev/nvidia*, libcuda and NVML under
/usr/local/nvidia/lib64; Ascend: /dev/davinci*, the manager devices and /usr/local/Ascend/driver).
"""

from __future__ import annotations

import glob
import os
import subprocess
import time
from pathlib import Path

from enginefab.check import container
from enginefab.check.report import Result
from enginefab.core import tools
from enginefab.engines.matrix import Image

TESTS = ("device", "op", "collective")
NVIDIA_LIBS = ("libcuda.so.1", "libnvidia-ml.so.1", "libnvidia-ptxjitcompiler.so.1")
ASCEND_DEVICES = ("/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc")
ASCEND_DRIVER = "/usr/local/Ascend/driver"


def gpu_present() -> str | None:
    """None if an NVIDIA GPU is usable here, else why not."""
    if not glob.glob("/dev/nvidia[0-9]*"):
        return "no NVIDIA GPU on this machine (/dev/nvidia* absent)"
    if not tools.which("nvidia-smi"):
        return "no NVIDIA driver tools (nvidia-smi) on this machine"
    if not _host_lib("libcuda.so.1"):
        return "the NVIDIA driver's libcuda.so.1 is not installed on this machine"
    return None


def npu_present() -> str | None:
    if not glob.glob("/dev/davinci[0-9]*"):
        return "no Ascend NPU on this machine (/dev/davinci* absent)"
    if not Path(ASCEND_DRIVER).is_dir():
        return f"no Ascend driver on this machine ({ASCEND_DRIVER} absent)"
    return None


def _host_lib(name: str) -> str | None:
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        parts = line.strip().split(" => ")
        if len(parts) == 2 and parts[0].split(" ")[0] == name:
            return parts[1]
    return None


def device_binds(kind: str) -> list[str]:
    """bwrap arguments that hand the host's devices and driver to the sandbox."""
    args: list[str] = []
    if kind == "cuda":
        for dev in sorted(glob.glob("/dev/nvidia*")):
            if os.path.exists(dev) and not os.path.isdir(dev):
                args += ["--dev-bind", dev, dev]
        for lib in NVIDIA_LIBS:
            src = _host_lib(lib)
            if src:
                args += ["--ro-bind", os.path.realpath(src), f"/usr/local/nvidia/lib64/{lib}"]
    elif kind == "cann":
        for dev in sorted(glob.glob("/dev/davinci[0-9]*")) + [d for d in ASCEND_DEVICES if os.path.exists(d)]:
            args += ["--dev-bind", dev, dev]
        args += ["--ro-bind", ASCEND_DRIVER, ASCEND_DRIVER]
    return args


def check(img: Image, *, defn=None, rootfs: Path | None = None, suite=None) -> list[Result]:
    kind = img.accelerator
    if kind == "cpu":
        return [Result("accelerator", "device", "skip", "CPU image: no accelerator to test")]
    why = gpu_present() if kind == "cuda" else npu_present()
    snippets = dict(suite.enginefab.accelerator.get(kind, {})) if suite else {}
    names = [f"{kind}-{t}" for t in TESTS]
    if why:
        return [Result("accelerator", n, "skip", f"skipped: {why}") for n in names]
    if defn is None or rootfs is None:
        return [Result("accelerator", n, "skip", "skipped: the image cannot be built here, so there is nothing to "
                       "run on the device") for n in names]
    return run_on_device(kind, defn, rootfs, snippets)


def run_on_device(kind: str, defn, rootfs: Path, snippets: dict[str, str], *, timeout: float = 900) -> list[Result]:
    env: dict[str, str] = {}
    out = []
    for t in TESTS:
        name = f"{kind}-{t}"
        code = snippets.get(t)
        if not code:
            out.append(Result("accelerator", name, "skip", f"skipped: engines/checks has no {t} test for "
                              f"{defn.image.engine} on {kind}"))
            continue
        if t == "collective" and kind == "cann" and not os.environ.get("RANK_TABLE_FILE"):
            out.append(Result("accelerator", name, "skip", "skipped: HCCL needs a rank table; set RANK_TABLE_FILE "
                              "to the JSON describing this host's NPUs"))
            continue
        if t == "collective" and kind == "cann":
            env["RANK_TABLE_FILE"] = os.environ["RANK_TABLE_FILE"]
        t0 = time.monotonic()
        r = container.run(defn, rootfs, [defn.python.interpreter, "-c", code + "\nprint('ENGINEFAB-OK')\n"], env=env,
                          timeout=timeout, extra=tuple(device_binds(kind)))
        rc, err, so = r.returncode, r.stderr, r.stdout
        dt = time.monotonic() - t0
        ok = rc == 0 and "ENGINEFAB-OK" in so
        tail = "\n".join(err.strip().splitlines()[-6:])
        out.append(Result("accelerator", name, "pass" if ok else "fail",
                          so.strip().splitlines()[-2] if ok and len(so.strip().splitlines()) > 1 else
                          ("ok" if ok else f"exit {rc}: {tail}"), dt))
    return out
