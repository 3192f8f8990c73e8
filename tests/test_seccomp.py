"""The sandbox's seccomp filter: every instruction interpreted here for both arches (what each
call gets, with its arguments), then loaded for real by bubblewrap on this machine's kernel."""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap

import pytest

from enginefab.assemble import seccomp
from enginefab.assemble.sandbox import host_arch

I386, ARM = 0x40000003, 0x40000028


def run_filter(prog: bytes, arch: int, nr: int, args: tuple[int, ...] = ()) -> int:
    """Classic BPF as the kernel runs a seccomp filter, over struct seccomp_data (little endian)."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, *(list(args) + [0] * (6 - len(args))))
    code = [struct.unpack("=HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    pc, acc = 0, 0
    for _ in range(len(code) + 1):  # jumps go forward only: at most one pass
        op, jt, jf, k = code[pc]
        if op == 0x20:
            acc = struct.unpack_from("<I", data, k)[0]
            pc += 1
        elif op in (0x15, 0x35, 0x45):
            taken = acc == k if op == 0x15 else acc >= k if op == 0x35 else bool(acc & k)
            pc += 1 + (jt if taken else jf)
        elif op == 0x06:
            return k
        else:
            raise AssertionError(f"unexpected opcode {op:#x} at {pc}")
    raise AssertionError("the program did not return")


EPERM = seccomp.RET_ERRNO | errno.EPERM
ENOSYS = seccomp.RET_ERRNO | errno.ENOSYS


@pytest.mark.parametrize("arch", sorted(seccomp.ARCHES))
def test_each_dangerous_call_is_refused_and_ordinary_ones_pass(arch):
    a = seccomp.ARCHES[arch]
    prog = seccomp.program(arch)
    for name in seccomp.DENIED:
        if name in a.numbers:
            assert run_filter(prog, a.audit, a.numbers[name]) == EPERM, name
    # the shocker escape and the namespace calls are in every arch's table
    for name in ("open_by_handle_at", "name_to_handle_at", "mount", "umount2", "pivot_root", "unshare", "setns",
                 "ptrace", "bpf", "keyctl", "add_key", "request_key", "userfaultfd", "perf_event_open",
                 "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module"):
        assert name in a.numbers, name
    denied = {a.numbers[n] for n in seccomp.DENIED if n in a.numbers} | {a.numbers[n] for n in ("clone", "clone3",
                                                                                                "personality")}
    allowed = [nr for nr in range(0, 470) if nr not in denied]
    assert len(allowed) > 330
    assert all(run_filter(prog, a.audit, nr, (0xFFFFFFFF,) * 6) == seccomp.RET_ALLOW for nr in allowed)


@pytest.mark.parametrize("arch", sorted(seccomp.ARCHES))
def test_clone_is_refused_new_namespaces_and_clone3_falls_back(arch):
    a = seccomp.ARCHES[arch]
    prog = seccomp.program(arch)
    clone = a.numbers["clone"]
    threads = 0x003D0F00  # what glibc's pthread_create passes
    assert run_filter(prog, a.audit, clone, (threads,)) == seccomp.RET_ALLOW
    assert run_filter(prog, a.audit, clone, (17,)) == seccomp.RET_ALLOW  # fork: SIGCHLD only
    for flag in (seccomp.CLONE_NEWUSER, seccomp.CLONE_NEWNS, seccomp.CLONE_NEWPID, seccomp.CLONE_NEWNET,
                 seccomp.CLONE_NEWUTS, seccomp.CLONE_NEWIPC, seccomp.CLONE_NEWCGROUP):
        assert run_filter(prog, a.audit, clone, (flag | 17,)) == EPERM, hex(flag)
    assert run_filter(prog, a.audit, a.numbers["clone3"]) == ENOSYS  # libc then uses clone


@pytest.mark.parametrize("arch", sorted(seccomp.ARCHES))
def test_personality_takes_only_dockers_values(arch):
    a = seccomp.ARCHES[arch]
    prog = seccomp.program(arch)
    for value in seccomp.PERSONALITIES:
        assert run_filter(prog, a.audit, a.numbers["personality"], (value,)) == seccomp.RET_ALLOW
    for value in (0x0040000, 0x0400000, 0x0040008):  # ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC
        assert run_filter(prog, a.audit, a.numbers["personality"], (value,)) == EPERM


def test_other_abis_are_not_let_through():
    x = seccomp.program("x86_64")
    mount_i386 = 21  # a 32-bit int 0x80 call: numbers of another table, so the process is killed
    assert run_filter(x, I386, mount_i386) == seccomp.RET_KILL_PROCESS
    assert run_filter(x, seccomp.X86_64.audit, seccomp.X32_SYSCALL_BIT | 165) == ENOSYS  # x32 mount
    assert run_filter(x, seccomp.AARCH64.audit, 40) == seccomp.RET_KILL_PROCESS
    a = seccomp.program("aarch64")
    assert run_filter(a, ARM, 21) == seccomp.RET_KILL_PROCESS
    assert run_filter(a, seccomp.AARCH64.audit, 40) == EPERM  # mount on arm64


def test_jumps_are_checked_when_assembling():
    asm = seccomp._Asm()
    for _ in range(300):
        asm.op(0x15, 1, jt="far")
    asm.label("far")
    asm.op(0x06, seccomp.RET_ALLOW)
    with pytest.raises(ValueError, match="at most 255"):
        asm.assemble()


#: run under bwrap --seccomp by the host's Python: each call through libc, as a program would
ATTEMPTS = textwrap.dedent("""
    import ctypes, errno, json, os, threading
    libc = ctypes.CDLL(None, use_errno=True)
    out = {}
    def attempt(name, call):
        ctypes.set_errno(0)
        r = call()
        out[name] = errno.errorcode.get(ctypes.get_errno(), "?") if r == -1 else "ok"
    class Handle(ctypes.Structure):
        _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int), ("f_handle", ctypes.c_ubyte * 128)]
    h, mount_id = Handle(128, 0), ctypes.c_int()
    attempt("name_to_handle_at", lambda: libc.name_to_handle_at(-100, b"/", ctypes.byref(h), ctypes.byref(mount_id), 0))
    root = Handle(8, 1)  # FILEID_INO32_GEN: inode 2 (an ext4 root), generation 0
    root.f_handle[0] = 2
    fd = os.open("/", os.O_RDONLY)
    attempt("open_by_handle_at", lambda: libc.open_by_handle_at(fd, ctypes.byref(root), os.O_RDONLY))
    attempt("mount", lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
    attempt("umount2", lambda: libc.umount2(b"/proc", 2))
    attempt("unshare", lambda: libc.unshare(0x10000000))
    attempt("setns", lambda: libc.setns(os.open("/proc/self/ns/mnt", os.O_RDONLY), 0))
    attempt("ptrace", lambda: libc.ptrace(16, os.getppid(), 0, 0))
    attempt("keyctl", lambda: libc.syscall(250, 0, -1, 0, 0, 0))
    attempt("bpf", lambda: libc.syscall(321, 0, 0, 0))
    attempt("personality-no-aslr", lambda: libc.personality(0x0040000))
    attempt("personality-query", lambda: 0 if libc.personality(0xFFFFFFFF) >= 0 else -1)
    t = threading.Thread(target=lambda: None)
    t.start(); t.join()
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    out["fork"] = os.waitpid(pid, 0)[1] >> 8
    out["thread"] = "ok"
    print(json.dumps(out))
""")


@pytest.mark.skipif(host_arch() != "x86_64" or not shutil.which("bwrap"), reason="x86_64 host with bubblewrap")
def test_the_filter_holds_on_this_kernel(tmp_path):
    """Loaded by bwrap, as in every sandbox: as root of the host (we are, here), so that it is
    the filter — not a missing capability — that refuses."""
    prog = tmp_path / "filter.bpf"
    prog.write_bytes(seccomp.program("x86_64"))
    fd = os.open(prog, os.O_RDONLY)
    try:
        p = subprocess.run(["bwrap", "--dev-bind", "/", "/", "--seccomp", str(fd), sys.executable, "-I", "-S", "-c",
                            ATTEMPTS], capture_output=True, text=True, pass_fds=(fd,), timeout=60)
    finally:
        os.close(fd)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    for name in ("name_to_handle_at", "open_by_handle_at", "mount", "umount2", "unshare", "setns", "ptrace",
                 "keyctl", "bpf", "personality-no-aslr"):
        assert got[name] == "EPERM", (name, got)
    assert got["personality-query"] == "ok" and got["thread"] == "ok" and got["fork"] == 7
    # without the filter the same call passes: the refusal above is the filter's (only this
    # harmless one is tried unfiltered: the others would act on the host)
    handle_only = ATTEMPTS.split("root = Handle")[0] + "print(json.dumps(out))"
    p = subprocess.run([sys.executable, "-I", "-S", "-c", handle_only], capture_output=True, text=True, timeout=60)
    assert json.loads(p.stdout)["name_to_handle_at"] == "ok", p.stdout + p.stderr
