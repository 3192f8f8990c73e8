"""Runtime level: the image's own Python imports the engine, checks its version (and the CUDA it
was built for, where the engine reports it) and computes something small — in the sandbox,
network cut, as the image's user (qemu-user for aarch64).

When the probe fails on a shared library, `diagnose` looks the library up in the unpacked image
and says why the loader refused it: absent from the image, or present but built for another
machine (an x86_64 file in an aarch64 image), or another ELF class.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from enginefab.assemble import sandbox
from enginefab.check.report import Result
from enginefab.check.structure import Suite
from enginefab.core.definition import Definition, RuntimeCheck
from enginefab.core.elf import read_elf

PROBE = '''
import sys
def _norm(v):
    p = str(v).split("+")[0].split(".")
    while len(p) > 1 and p[-1] == "0":
        p.pop()
    return p
import {import_name}
_got = str({version_expr})
print("ENGINEFAB-VERSION " + _got)
if _norm(_got) != _norm({expect!r}):
    print("ENGINEFAB-MISMATCH {engine} is " + _got + ", the pin is {expect}", file=sys.stderr)
    sys.exit(3)
{built_for}
{smoke}
{extra}
print("ENGINEFAB-OK")
'''

BUILT_FOR = 'print("ENGINEFAB-BUILT-FOR {key} " + str({expr}))'


def probe_code(c: RuntimeCheck, suite: Suite | None = None) -> str:
    ext = suite.enginefab if suite else None
    built_for = "\n".join(BUILT_FOR.format(key=k, expr=e) for k, e in sorted((ext.builtFor if ext else {}).items()))
    return PROBE.format(import_name=c.import_name, version_expr=c.version_expr, expect=c.expect_version,
                        engine=c.engine, smoke=c.smoke, built_for=built_for, extra=ext.probe if ext else "")


def env_of(defn: Definition) -> dict[str, str]:
    return dict(defn.config.env)


def expected_built_for(defn: Definition) -> dict[str, str]:
    """What the engine should report: the CUDA of the image's stack (None on CPU/CANN images)."""
    im = defn.image
    return {"cuda": im.accelerator_version if im.accelerator == "cuda" and im.accelerator_version else "None"}


def check(defn: Definition, rootfs: Path, *, suite: Suite | None = None, timeout: float = 900) -> list[Result]:
    uid, _, gid = defn.config.user.partition(":")
    out = []
    for c in defn.checks.runtime:
        t0 = time.monotonic()
        r = sandbox.run_python(rootfs, defn.image.arch, defn.python.interpreter, probe_code(c, suite), env=env_of(defn),
                               uid=int(uid), gid=int(gid or 0), cwd=defn.config.workdir, timeout=timeout)
        dt = time.monotonic() - t0
        version = _marker(r.stdout, "ENGINEFAB-VERSION ")
        built = {ln.split(" ", 2)[1]: ln.split(" ", 2)[2] for ln in r.stdout.splitlines()
                 if ln.startswith("ENGINEFAB-BUILT-FOR ") and len(ln.split(" ", 2)) == 3}
        data = {"version": version, "arch": defn.image.arch, "emulated": defn.image.arch != sandbox.host_arch(),
                "built_for": built}
        name = f"import-{c.engine}"
        if r.returncode == 0 and "ENGINEFAB-OK" in r.stdout:
            out.append(Result("runtime", name, "pass",
                              f"{c.engine} {version} imported and computed as uid {uid}"
                              + (" (under qemu-user)" if data["emulated"] else ""), dt, data))
        else:
            mismatch = _marker(r.stderr, "ENGINEFAB-MISMATCH ")
            tail = "\n".join(r.stderr.strip().splitlines()[-8:])
            reason = diagnose(rootfs, defn.image.arch, r.stderr)
            detail = mismatch or (f"{reason}\n" if reason else "") + f"exit {r.returncode}: {tail or r.stdout[-500:]}"
            if reason:
                data["diagnosis"] = reason
            out.append(Result("runtime", name, "fail", detail, dt, data))
        if built:
            want = expected_built_for(defn)
            wrong = [f"{c.engine} was built for {k.upper()} {v}, the image's stack is "
                     f"{defn.image.accelerator} {defn.image.accelerator_version or ''}".rstrip()
                     for k, v in sorted(built.items()) if k in want and v != want[k]]
            out.append(Result("runtime", f"built-for-{c.engine}", "fail" if wrong else "pass",
                              "; ".join(wrong) or ", ".join(f"{k} {v}" for k, v in sorted(built.items()))
                              + " as the image's stack says", data={"reported": built, "expected": want}))
    return out


def _marker(text: str, prefix: str) -> str | None:
    return next((ln[len(prefix):] for ln in text.splitlines() if ln.startswith(prefix)), None)


# -- failure diagnosis -------------------------------------------------------------------

#: loader messages that name a library: "libX.so.1: cannot open shared object file",
#: "error while loading shared libraries: libX.so.1", "/path/libX.so: wrong ELF class"
_LIB_ERR = re.compile(r"(?:error while loading shared libraries: )?([\w.+-]*\.so[\w.]*|/[^\s:]+\.so[\w.]*): "
                      r"(cannot open shared object file|wrong ELF class|invalid ELF header|"
                      r"cannot open shared object|ELF load command)")
_MACHINES = {"EM_X86_64": "x86_64", "EM_AARCH64": "aarch64", "EM_386": "i386", "EM_ARM": "arm"}


def diagnose(root: Path, arch: str, stderr: str) -> str | None:
    """Why the loader could not load a library named in `stderr`, from the unpacked image."""
    m = _LIB_ERR.search(stderr)
    if not m:
        return None
    lib, err = m.group(1), m.group(2)
    name = lib.rsplit("/", 1)[-1]
    found = []
    for dirpath, _dirs, files in os.walk(root):
        if name in files:
            host = Path(dirpath) / name
            found.append(("/" + str(host.relative_to(root)), host))
    if not found:
        return (f"{name} is not in the image: no package or wheel provides it "
                f"(the loader said: {err})")
    wrong = []
    for cpath, host in found:
        elf = read_elf(host.resolve() if host.is_symlink() and str(host.resolve()).startswith(str(root)) else host, cpath)
        if elf and _MACHINES.get(elf.machine, elf.machine) != arch:
            wrong.append(f"{cpath} is a {_MACHINES.get(elf.machine, elf.machine)} ELF ({elf.machine})")
    if wrong:
        return (f"{name} is in the image but built for another machine: {'; '.join(wrong)}; "
                f"the image is {arch}, so the loader skips it")
    return f"{name} is in the image at {', '.join(c for c, _ in found)} (the loader said: {err})"
