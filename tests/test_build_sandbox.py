"""A hostile run step on real roots, x86_64 (bubblewrap, native) and aarch64 (qemu-user): the
escapes of issue 11 — file handles (the "shocker" escape), mounts, new user namespaces,
ptrace, the kernel's own calls, a host file it should not see, a listing of the host, writes
outside its root — fail inside the sandbox; the build exits 2 and shows what the step printed;
nothing appears on the host; a step that succeeds carries none of the host's bytes in its layer.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from enginefab.assemble import rootfs, sandbox, seccomp
from enginefab.assemble.builder import Builder
from enginefab.assemble.rootfs import open_layer
from enginefab.assemble.store import Store
from tests.conftest import definition_file, demo_definition, enginefab, session_for
from tests.test_build_runstep import with_run_layer

pytestmark = pytest.mark.slow
ARCHES = {"x86_64": "demo-pytorch-x86_64", "aarch64": "demo-pytorch-aarch64"}

#: the image's own Python, through its libc, as hostile code would; each line "ESCAPE name: …"
ATTEMPTS = r'''
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
NR = {numbers}
results = {{}}
def attempt(name, call):
    ctypes.set_errno(0)
    r = call()
    err = ctypes.get_errno()
    results[name] = "blocked " + errno.errorcode.get(err, str(err)) if r == -1 else "SUCCEEDED " + str(r)
    if r == 0 and name == "clone-newuser":
        os._exit(0)  # the child of a clone that should not have happened
    print("ESCAPE " + name + ": " + results[name], flush=True)
class Handle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int), ("f_handle", ctypes.c_ubyte * 128)]
h, mount_id = Handle(128, 0), ctypes.c_int()
attempt("name_to_handle_at", lambda: libc.name_to_handle_at(-100, b"/", ctypes.byref(h), ctypes.byref(mount_id), 0))
root = Handle(8, 1)  # FILEID_INO32_GEN: inode 2, the root of an ext4 file system, generation 0
root.f_handle[0] = 2
fd = os.open("/", os.O_RDONLY)
attempt("open_by_handle_at", lambda: libc.open_by_handle_at(fd, ctypes.byref(root), os.O_RDONLY))
attempt("mount", lambda: libc.mount(b"none", b"/mnt", b"tmpfs", 0, None))
attempt("mount-bind", lambda: libc.mount(b"/proc/1/root", b"/mnt", None, 4096, None))
attempt("umount2", lambda: libc.umount2(b"/enginefab/inputs", 2))
attempt("pivot_root", lambda: libc.syscall(NR["pivot_root"], b"/", b"/mnt"))
attempt("unshare-user", lambda: libc.unshare(0x10000000))
attempt("unshare-mount", lambda: libc.unshare(0x00020000))
attempt("clone-newuser", lambda: libc.syscall(NR["clone"], 0x10000000 | 17, 0, 0, 0, 0))
attempt("setns", lambda: libc.setns(os.open("/proc/self/ns/mnt", os.O_RDONLY), 0))
attempt("ptrace", lambda: libc.ptrace(16, 1, 0, 0))
for name in ("keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd", "kexec_load",
             "init_module", "delete_module"):
    attempt(name, lambda: libc.syscall(NR[name], 0, 0, 0, 0, 0))
'''

SCRIPT = r'''
echo "ls /: $(ls -a / | tr '\n' ' ')"
for f in {secrets}; do
  if cat "$f" 2>/dev/null; then echo "ESCAPE read $f: SUCCEEDED"; else echo "ESCAPE read $f: blocked"; fi
done
for f in {outside}; do
  if echo pwned 2>/dev/null > "$f"; then echo "wrote $f (inside the root)"; else echo "ESCAPE write $f: blocked"; fi
done
echo pwned > /proc/1/root/pwned-via-proc 2>/dev/null
python3.9 - <<'EOF' || exit 9
{attempts}
EOF
echo "every escape failed"
exit 1
'''

LOOT = r'''
mkdir -p /opt/loot
for f in {secrets}; do cat "$f" >> /opt/loot/read 2>/dev/null || true; done
find / -xdev -name '*enginefab-secret*' > /opt/loot/found 2>/dev/null || true
cp -a /proc/1/root/root/. /opt/loot/root-of-pid1/ 2>/dev/null || true
ls -a / > /opt/loot/listing
python3.9 - <<'EOF' > /opt/loot/by-handle 2>&1 || true
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
class Handle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int), ("f_handle", ctypes.c_ubyte * 128)]
for kind, raw in {handles}:
    h = Handle(len(bytes.fromhex(raw)), kind)
    ctypes.memmove(h.f_handle, bytes.fromhex(raw), len(bytes.fromhex(raw)))
    fd = libc.open_by_handle_at(os.open("/", os.O_RDONLY), ctypes.byref(h), os.O_RDONLY)
    print("open_by_handle_at", fd, ctypes.get_errno())
    if fd >= 0:
        print(os.read(fd, 4096))
EOF
'''


class _Handle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int), ("f_handle", ctypes.c_ubyte * 128)]


def file_handle(path: Path) -> tuple[int, str]:
    """The file system's handle of `path` (what a "shocker" attacker guesses), found on the host."""
    libc = ctypes.CDLL(None, use_errno=True)
    h, mount_id = _Handle(128, 0), ctypes.c_int()
    if libc.name_to_handle_at(-100, str(path).encode(), ctypes.byref(h), ctypes.byref(mount_id), 0) != 0:
        raise OSError(ctypes.get_errno(), "name_to_handle_at", str(path))
    return h.handle_type, bytes(h.f_handle[: h.handle_bytes]).hex()


def _numbers(arch: str) -> dict[str, int]:
    return dict(seccomp.ARCHES[arch].numbers)


@pytest.fixture(scope="module")
def planted(demo_build):
    """A secret on the host, under /root and beside the store; removed afterwards. The steps
    know where it is (its name is in their scripts, and so in their logs), not what it holds."""
    secret, name = secrets.token_hex(24), f"enginefab-secret-{secrets.token_hex(8)}"
    home = Path("/root") if os.access("/root", os.W_OK) else Path.home()
    paths = [home / f".{name}", demo_build["store"].parent / name]
    for p in paths:
        p.write_text(secret + "\n")
    yield {"secret": secret, "paths": paths, "handles": [file_handle(p) for p in paths]}
    for p in paths:
        p.unlink(missing_ok=True)


def _layer_bytes(store: Path, digest: str) -> bytes:
    data = b""
    with open_layer(store / "blobs/sha256" / digest.split(":")[1], "application/vnd.oci.image.layer.v1.tar+gzip") as f:
        with tarfile.open(fileobj=f, mode="r|") as tf:
            for m in tf:
                data += m.name.encode() + b"\0" + m.linkname.encode() + b"\0"
                if m.isreg():
                    data += tf.extractfile(m).read()  # type: ignore[union-attr]
    return data


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_escapes_fail_inside_the_sandbox(arch, demo_build, planted, tmp_path):
    defn = demo_definition(ARCHES[arch])
    outside = [str(demo_build["store"].parent / f"pwned-{arch}"), f"/root/pwned-{arch}", f"/tmp/pwned-{arch}"]
    script = SCRIPT.format(secrets=" ".join(str(p) for p in planted["paths"]), outside=" ".join(outside),
                           attempts=ATTEMPTS.format(numbers=_numbers(arch)))
    path = definition_file(with_run_layer(defn, defn.layers[:2], "escape", script), tmp_path / "escape.json")
    p = enginefab("build", str(path), "--store", str(demo_build["store"]), "--out", str(tmp_path / "l"))
    assert p.returncode == 2, p.stdout + p.stderr
    out = p.stderr
    assert "run step escape of layer run/escape exited with status 1" in out and "every escape failed" in out, out
    escapes = dict(ln.split("ESCAPE ", 1)[1].split(": ", 1) for ln in out.splitlines() if "ESCAPE " in ln)
    assert not [k for k, v in escapes.items() if not v.startswith("blocked")], escapes
    assert {f"read {p}" for p in planted["paths"]} | {f"write {outside[0]}"} <= set(escapes), escapes
    calls = {k: v.split()[-1] for k, v in escapes.items() if not k.startswith(("read ", "write "))}
    assert len(calls) == 20, calls
    # refused by the filter (EPERM) natively; under qemu-user a few calls are refused by qemu
    # itself (ENOSYS: not emulated, EINVAL: clone flags it does not take) before they reach it
    assert set(calls.values()) <= ({"EPERM"} if arch == "x86_64" else {"EPERM", "ENOSYS", "EINVAL"}), calls
    for name in ("open_by_handle_at", "name_to_handle_at", "mount", "mount-bind", "unshare-user", "setns"):
        assert calls[name] == "EPERM", (name, calls)  # emulated or not, these reach the filter
    # the listing is the image's root and the sandbox's own mounts, nothing of the host's
    listing = next(ln for ln in out.splitlines() if "ls /: " in ln).split("ls /: ", 1)[1].split()
    assert "work" in os.listdir("/") and "work" not in listing
    assert not (set(listing) - {".", "..", "bin", "boot", "dev", "etc", "home", "lib", "lib64", "proc", "root", "run",
                                "sbin", "sys", "tmp", "usr", "var", "enginefab", "mnt", "opt", "srv", "media"}), listing
    for f in [*outside, "/pwned-via-proc"]:
        assert not Path(f).exists(), f
    assert not list(demo_build["store"].parent.rglob("pwned*"))
    for log in (demo_build["store"] / "logs").iterdir():
        assert planted["secret"] not in log.read_text(errors="replace")


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_a_step_that_looks_for_host_files_gets_none_into_its_layer(arch, demo_build, planted, tmp_path):
    defn = demo_definition(ARCHES[arch])
    script = LOOT.format(secrets=" ".join(str(p) for p in planted["paths"]), handles=planted["handles"])
    path = definition_file(with_run_layer(defn, defn.layers[:2], "loot", script), tmp_path / "loot.json")
    p = enginefab("build", str(path), "--store", str(demo_build["store"]), "--out", str(tmp_path / "l"), "--json")
    assert p.returncode == 0, p.stderr
    layer = json.loads(p.stdout)[0]["layer_results"][-1]
    assert layer["status"] == "built"
    data = _layer_bytes(demo_build["store"], layer["digests"][0])
    assert b"opt/loot/listing" in data and b"usr\n" in data  # the step ran and listed its root
    assert data.count(b"open_by_handle_at -1 1\n") == 2  # EPERM for both of the host's handles
    assert planted["secret"].encode() not in data
    for blob in (tmp_path / "l" / "blobs" / "sha256").iterdir():
        assert planted["secret"].encode() not in blob.read_bytes()


def _sandboxed(marker: str) -> list[int]:
    """Processes whose command line carries `marker`."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and marker.encode() in (d / "cmdline").read_bytes():
                pids.append(int(d.name))
        except OSError:
            pass
    return pids


def test_a_program_past_its_timeout_is_killed_with_its_sandbox(demo_build):
    """A step that never ends: exit status 124 after the timeout, and no process of its sandbox
    left behind (the launcher, bubblewrap and the program all go)."""
    store = Store(demo_build["store"])
    root = rootfs.unpacked(store, Builder(store, session=session_for()).image(demo_definition(ARCHES["x86_64"])))
    marker = f"sleep-{secrets.token_hex(6)}"
    sb = sandbox.Sandbox(root=root, arch="x86_64", env={"PATH": "/usr/bin:/bin"}, mode="image")
    t0 = time.monotonic()
    r = sandbox.run(sb, ["/usr/bin/python3.9", "-c", f"import time; time.sleep(600)  # {marker}"], timeout=3)
    assert r.returncode == 124 and r.stderr == "timed out after 3 s"
    assert time.monotonic() - t0 < 30
    deadline = time.monotonic() + 10
    while _sandboxed(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _sandboxed(marker)


def test_a_killed_build_takes_its_sandbox_with_it(demo_build):
    """kill -9 of the process that started a sandbox: nothing of the sandbox keeps running."""
    store = Store(demo_build["store"])
    root = rootfs.unpacked(store, Builder(store, session=session_for()).image(demo_definition(ARCHES["aarch64"])))
    marker = f"sleep-{secrets.token_hex(6)}"
    code = ("from pathlib import Path\nfrom enginefab.assemble import sandbox\n"
            f"sb = sandbox.Sandbox(root=Path({str(root)!r}), arch='aarch64', env={{}}, mode='image')\n"
            f"sandbox.run(sb, ['/usr/bin/python3.9', '-c', 'import time; time.sleep(600)  # {marker}'], timeout=900)\n")
    before = set(Path(tempfile.gettempdir()).glob("enginefab-sandbox-*"))
    build = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 60
    while len(_sandboxed(marker)) < 3 and time.monotonic() < deadline:  # launcher, bwrap, the program
        time.sleep(0.2)
    assert len(_sandboxed(marker)) >= 3
    build.send_signal(signal.SIGKILL)
    build.wait()
    deadline = time.monotonic() + 10
    while _sandboxed(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _sandboxed(marker)
    for left in set(Path(tempfile.gettempdir()).glob("enginefab-sandbox-*")) - before:
        shutil.rmtree(left)  # the killed process's empty mount points: nobody was left to remove them
