"""Accelerator level: GPU and NPU tests run where the hardware is, and say "skipped" elsewhere."""

from __future__ import annotations

import glob
import shutil

from enginefab.check.report import Result
from enginefab.engines.matrix import Image


def gpu_present() -> str | None:
    """None if an NVIDIA GPU is usable here, else why not."""
    if not glob.glob("/dev/nvidia[0-9]*"):
        return "no NVIDIA GPU on this machine (/dev/nvidia* absent)"
    if not shutil.which("nvidia-smi"):
        return "no NVIDIA driver tools (nvidia-smi) on this machine"
    return None


def npu_present() -> str | None:
    if not glob.glob("/dev/davinci[0-9]*"):
        return "no Ascend NPU on this machine (/dev/davinci* absent)"
    return None


def check(img: Image) -> list[Result]:
    kind = img.accelerator
    if kind == "cpu":
        return [Result("accelerator", "device", "skip", "CPU image: no accelerator to test")]
    why = gpu_present() if kind == "cuda" else npu_present()
    if why:
        return [Result("accelerator", f"{kind}-device", "skip", f"skipped: {why}")]
    return [Result("accelerator", f"{kind}-device", "error",
                   f"{kind} hardware found, but device tests run through the container runtime; "
                   "run them with the image on that host")]
