"""Runtime level: the image's own Python imports the engine, checks its version (and the CUDA it
was built for, where the engine reports it) and computes something small — run the way a
container runtime runs the image (`enginefab.check.container`: its user, environment, working
directory and entrypoint; network cut; qemu-user for aarch64).

Before the engine, the probe writes a file where programs expect to write: the directory
``tempfile.gettempdir()`` picks, ``/dev/shm`` and the user's home when it belongs to the user
(TensorFlow's import fails without a temporary directory).

The result carries what the smoke computation printed. A failing probe is reported by the
exception it died of and its causes (`explain`); its whole output is kept in the store's
``logs/`` at a path the result names. When the probe fails on a shared library, `diagnose`
looks the library up in the unpacked image and says why the loader refused it: absent from the
image, or present but built for another machine (an x86_64 file in an aarch64 image), or
another ELF class.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from enginefab.assemble import sandbox
from enginefab.check import container
from enginefab.check.report import Result
from enginefab.check.structure import Suite
from enginefab.core.definition import Definition, RuntimeCheck
from enginefab.core.elf import read_elf

WRITABLE = '''
def _enginefab_writable():
    import json, os, tempfile
    print("ENGINEFAB-ID " + json.dumps([os.getuid(), os.getgid(), sorted(os.getgroups()), os.getcwd()]))
    places = []
    try:
        places.append(("tmp", tempfile.gettempdir()))
    except Exception as e:
        print("ENGINEFAB-WRITABLE " + json.dumps(["tmp", "", type(e).__name__ + ": " + str(e)]))
    places.append(("shm", "/dev/shm"))
    home = os.path.expanduser("~")
    try:
        if os.stat(home).st_uid == os.getuid():
            places.append(("home", home))
        else:
            print("ENGINEFAB-WRITABLE " + json.dumps(["home", home, "not the user's"]))
    except OSError as e:
        print("ENGINEFAB-WRITABLE " + json.dumps(["home", home, type(e).__name__ + ": " + str(e)]))
    for key, where in places:
        try:
            with tempfile.NamedTemporaryFile(dir=where, prefix=".enginefab-probe-") as f:
                f.write(b"probe")
                f.flush()
            status = "ok"
        except Exception as e:
            status = type(e).__name__ + ": " + str(e)
        print("ENGINEFAB-WRITABLE " + json.dumps([key, where, status]))
_enginefab_writable()
'''

PROBE = '''
import sys
{writable}
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
print("ENGINEFAB-SMOKE-DONE")
{extra}
print("ENGINEFAB-OK")
'''

BUILT_FOR = """try:
    print("ENGINEFAB-BUILT-FOR {key} " + str({expr}))
except Exception as _e:
    print("ENGINEFAB-BUILT-FOR-ERROR {key} " + type(_e).__name__ + ": " + str(_e).replace("\\n", " "))"""
#: what an image's accelerator kind means for each builtFor key the engines report
DEVICE_TARGET = {"cpu": "CPU", "cuda": "GPU", "cann": "Ascend"}


def probe_code(c: RuntimeCheck, suite: Suite | None = None) -> str:
    """The probe of one engine: its own file's builtFor and probe (a suite made in code, with no
    per-file sections, gives its merged ones)."""
    ext = None if suite is None else suite.engineSections.get(c.engine) if suite.engineSections else suite.enginefab
    built_for = "\n".join(BUILT_FOR.format(key=k, expr=e) for k, e in sorted((ext.builtFor if ext else {}).items()))
    return PROBE.format(writable=WRITABLE, import_name=c.import_name, version_expr=c.version_expr,
                        expect=c.expect_version, engine=c.engine, smoke=c.smoke, built_for=built_for,
                        extra=ext.probe if ext else "")


def expected_built_for(defn: Definition) -> dict[str, str]:
    """What the engine should report: the CUDA of the image's stack (None on CPU/CANN images),
    MindSpore's device target (CPU, GPU, Ascend)."""
    im = defn.image
    return {"cuda": im.accelerator_version if im.accelerator == "cuda" and im.accelerator_version else "None",
            "device_target": DEVICE_TARGET.get(im.accelerator, im.accelerator)}


def built_for_result(engine: str, version: str | None, defn: Definition, stdout: str) -> Result | None:
    """What the engine says it was built for against the image's accelerator. A "cpu" image whose
    engine is a CUDA build is a warning (it computes on a CPU, carrying CUDA code it never uses);
    any other difference is a failure, and so is a builtFor expression that fails on this release."""
    built = dict(_pairs(stdout, "ENGINEFAB-BUILT-FOR "))
    errors = dict(_pairs(stdout, "ENGINEFAB-BUILT-FOR-ERROR "))
    name, want, im = f"built-for-{engine}", expected_built_for(defn), defn.image
    if errors:
        return Result("runtime", name, "fail", "; ".join(
            f"the builtFor expression for {k} fails on {engine} {version}: {e}" for k, e in sorted(errors.items()))
            + f" (fix engines/checks/{engine}.yaml)", data={"reported": built, "errors": errors})
    if not built:
        if version is None:
            return None  # the probe stopped before: the import result says why
        return Result("runtime", name, "warn", f"engines/checks/{engine}.yaml has no builtFor: what {engine} "
                      "was built for is not checked against the image's accelerator", data={"expected": want})
    data = {"reported": built, "expected": {k: v for k, v in want.items() if k in built}}
    wrong = {k: v for k, v in sorted(built.items()) if k in want and v != want[k]}
    if im.accelerator == "cpu" and set(wrong) == {"cuda"}:
        return Result("runtime", name, "warn", f"the image says cpu, but {engine} {version} is a CUDA {wrong['cuda']} "
                      "build: it computes on a CPU, carrying CUDA code it never uses; use the engine's CPU build "
                      "(e.g. tensorflow-cpu) or give the image a CUDA accelerator", data=data)
    if wrong:
        stack = f"{im.accelerator} {im.accelerator_version or ''}".rstrip()
        return Result("runtime", name, "fail", "; ".join(f"{engine} was built for {k} {v}, the image's accelerator is "
                                                         f"{stack} ({k} {want[k]})" for k, v in wrong.items()), data=data)
    return Result("runtime", name, "pass", ", ".join(f"{k} {v}" for k, v in sorted(built.items()))
                  + " as the image's accelerator says", data=data)


def _pairs(stdout: str, prefix: str):
    for ln in stdout.splitlines():
        if ln.startswith(prefix) and len(ln[len(prefix):].split(" ", 1)) == 2:
            yield tuple(ln[len(prefix):].split(" ", 1))


def check(defn: Definition, rootfs: Path, *, suite: Suite | None = None, timeout: float = 900,
          logs: Path | None = None) -> list[Result]:
    """The engine probes of `defn` in the image unpacked at `rootfs`; a failing probe's whole
    output is kept in the directory `logs`."""
    out = []
    user = container.user_of(rootfs, defn.config.user, image=defn.image.alias)
    for c in defn.checks.runtime:
        t0 = time.monotonic()
        r = run_probe(defn, rootfs, probe_code(c, suite), timeout=timeout)
        dt = time.monotonic() - t0
        version = marker(r.stdout, "ENGINEFAB-VERSION ")
        built = dict(_pairs(r.stdout, "ENGINEFAB-BUILT-FOR "))
        data = {"version": version, "arch": defn.image.arch, "emulated": defn.image.arch != sandbox.host_arch(),
                "built_for": built, "output": printed(r.stdout), "identity": marker(r.stdout, "ENGINEFAB-ID ")}
        name = f"import-{c.engine}"
        if r.returncode == 0 and "ENGINEFAB-OK" in r.stdout:
            said = "; ".join(printed(r.stdout.split("ENGINEFAB-SMOKE-DONE")[0]).splitlines())
            data["smoke"] = said
            out.append(Result("runtime", name, "pass",
                              f"{c.engine} {version} imported and computed as uid {user.uid}"
                              + (" (under qemu-user)" if data["emulated"] else "")
                              + (f": {said[:300]}" if said else ""), dt, data))
        else:
            mismatch = marker(r.stderr, "ENGINEFAB-MISMATCH ")
            reason = diagnose(rootfs, defn.image.arch, r.stderr)
            why = explain(r.stderr) or tail(r.stderr or r.stdout, 20)
            detail = mismatch or (f"{reason}\n" if reason else "") + f"exit {r.returncode}: {why}"
            if logs is not None:
                data["log"] = str(keep_log(logs, defn, name, rootfs, r))
                detail += f"\nthe whole output: {data['log']}"
            if reason:
                data["diagnosis"] = reason
            out.append(Result("runtime", name, "fail", detail, dt, data))
        out.append(writable_result(r.stdout, user.uid))
        bf = built_for_result(c.engine, version, defn, r.stdout)
        if bf is not None:
            out.append(bf)
    return out


def run_probe(defn: Definition, rootfs: Path, code: str, *, timeout: float = 900) -> sandbox.Result:
    """`python -c code` in the image as a container runtime runs it. The image is writable, as in a
    container, but the probe compiles no bytecode of the whole engine into it (seconds under
    qemu) unless the image's own environment says so."""
    env = {} if "PYTHONDONTWRITEBYTECODE" in defn.config.env else {"PYTHONDONTWRITEBYTECODE": "1"}
    return container.run(defn, rootfs, [defn.python.interpreter, "-c", code], env=env, timeout=timeout)


def marker(text: str, prefix: str) -> str | None:
    return next((ln[len(prefix):] for ln in text.splitlines() if ln.startswith(prefix)), None)


def printed(stdout: str, limit: int = 4000) -> str:
    """What the probe printed besides its markers: the smoke computation's output."""
    return "\n".join(ln for ln in stdout.splitlines() if not ln.startswith("ENGINEFAB-")).strip()[-limit:]


def writable_result(stdout: str, uid: int) -> Result:
    """The probe's writes to the temporary directory, /dev/shm and the user's home."""
    places = []
    for ln in stdout.splitlines():
        if ln.startswith("ENGINEFAB-WRITABLE "):
            try:
                key, where, status = json.loads(ln[len("ENGINEFAB-WRITABLE "):])
            except ValueError:
                continue
            places.append((str(key), str(where), str(status)))
    if not places:
        return Result("runtime", "writable-dirs", "fail", "the probe stopped before it wrote a file")
    data = {k: {"path": w, "status": s} for k, w, s in places}
    bad = [f"{k} {w or '(none)'}: {s}" for k, w, s in places if s not in ("ok", "not the user's")]
    if bad:
        return Result("runtime", "writable-dirs", "fail", f"as uid {uid}, cannot write to " + "; ".join(bad), data=data)
    ok = ", ".join(f"{k} {w}" for k, w, s in places if s == "ok")
    skipped = "".join(f"; {k} {w} is not the user's (not required)" for k, w, s in places if s != "ok")
    return Result("runtime", "writable-dirs", "pass", f"wrote to {ok} as uid {uid}{skipped}", data=data)


def keep_log(logs: Path, defn: Definition, name: str, rootfs: Path, r: sandbox.Result) -> Path:
    """The probe's whole output, at a path per image, check and unpacked digest."""
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / f"check-{defn.image.alias}-{rootfs.name[:12]}-{name}.log"
    path.write_text(f"exit status {r.returncode}\n\n-- stdout --\n{r.stdout}\n-- stderr --\n{r.stderr}")
    return path


def tail(text: str, n: int) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


_TB = "Traceback (most recent call last):"
_CHAIN = {"The above exception was the direct cause of the following exception:": "caused by",
          "During handling of the above exception, another exception occurred:": "while handling"}
_FRAME = re.compile(r'\s+File "(.+)", line (\d+), in (.+)')


def explain(stderr: str) -> str | None:
    """The exception a Python program died of, where it was raised, and the exceptions chained
    to it (its cause, or the one it was handling), from the program's stderr; None without one."""
    lines = stderr.splitlines()
    blocks: list[tuple[str | None, str | None, list[str]]] = []  # (link to the block before, where, exception)
    link: str | None = None
    i = 0
    while i < len(lines):
        if lines[i].strip() in _CHAIN:
            link = _CHAIN[lines[i].strip()]
            i += 1
            continue
        if not lines[i].startswith(_TB):
            i += 1
            continue
        i += 1
        where = None
        while i < len(lines) and lines[i][:1] in (" ", "\t"):
            m = _FRAME.match(lines[i])
            if m:
                where = f"{m.group(1)}:{m.group(2)}, in {m.group(3)}"
            i += 1
        exc = []
        while i < len(lines) and lines[i].strip() and not lines[i].startswith(_TB) and lines[i].strip() not in _CHAIN:
            exc.append(lines[i])
            i += 1
        blocks.append((link, where, exc))
        link = None
    if not blocks:
        return None
    link, where, exc = blocks[-1]
    text = "\n".join(exc) + (f"\n  at {where}" if where else "")
    for before_link, before_where, before_exc in reversed(blocks[:-1]):
        if link is None:
            break
        text += f"\n  {link}: " + "\n    ".join(before_exc) + (f"\n    at {before_where}" if before_where else "")
        link = before_link
    return text


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
