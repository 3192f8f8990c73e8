"""Runtime level: the image's own Python imports the engine, checks its version and computes
something small — in the sandbox, network cut, as the image's user (qemu-user for aarch64)."""

from __future__ import annotations

import time
from pathlib import Path

from enginefab.build import sandbox
from enginefab.check.report import Result
from enginefab.lock.definition import Definition, RuntimeCheck

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
{smoke}
print("ENGINEFAB-OK")
'''


def probe_code(c: RuntimeCheck) -> str:
    return PROBE.format(import_name=c.import_name, version_expr=c.version_expr, expect=c.expect_version,
                        engine=c.engine, smoke=c.smoke)


def env_of(defn: Definition) -> dict[str, str]:
    return dict(defn.config.env)


def check(defn: Definition, rootfs: Path, *, timeout: float = 900) -> list[Result]:
    uid, _, gid = defn.config.user.partition(":")
    out = []
    for c in defn.checks.runtime:
        t0 = time.monotonic()
        r = sandbox.run_python(rootfs, defn.image.arch, defn.python.interpreter, probe_code(c), env=env_of(defn),
                               uid=int(uid), gid=int(gid or 0), cwd=defn.config.workdir, timeout=timeout)
        dt = time.monotonic() - t0
        version = next((ln.split(" ", 1)[1] for ln in r.stdout.splitlines() if ln.startswith("ENGINEFAB-VERSION ")), None)
        data = {"version": version, "arch": defn.image.arch, "emulated": defn.image.arch != sandbox.host_arch()}
        if r.returncode == 0 and "ENGINEFAB-OK" in r.stdout:
            out.append(Result("runtime", f"import-{c.engine}", "pass",
                              f"{c.engine} {version} imported and computed as uid {uid}"
                              + (" (under qemu-user)" if data["emulated"] else ""), dt, data))
            continue
        mismatch = next((ln.split(" ", 1)[1] for ln in r.stderr.splitlines() if ln.startswith("ENGINEFAB-MISMATCH ")), None)
        tail = "\n".join(r.stderr.strip().splitlines()[-8:])
        detail = mismatch or f"exit {r.returncode}: {tail or r.stdout[-500:]}"
        out.append(Result("runtime", f"import-{c.engine}", "fail", detail, dt, data))
    return out
