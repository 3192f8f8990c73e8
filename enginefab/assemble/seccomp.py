"""The seccomp filter of every sandbox: a classic-BPF program generated here, loaded by bubblewrap
(``bwrap --seccomp FD``) right before it executes the sandboxed program.

A deny list, written for the calls that reach past a namespace or the kernel's own boundary —
at least what Docker's default profile refuses a container without extra capabilities:

* file handles (``open_by_handle_at`` walks a whole filesystem from any inode: the 2014
  "shocker" escape) and ``name_to_handle_at``;
* mounts, old and new API, ``pivot_root``; new namespaces (``unshare``, ``setns``, ``clone``
  with a ``CLONE_NEW*`` flag; ``clone3`` answers ENOSYS so that libc falls back to ``clone``,
  whose flags a filter can read);
* other processes' memory (``ptrace``, ``process_vm_*``, ``kcmp``, ``pidfd_getfd``);
* the kernel's own state: modules, ``kexec_*``, ``reboot``, ``bpf``, ``perf_event_open``,
  ``userfaultfd``, the key rings (``keyctl``, ``add_key``, ``request_key``), clocks, swap,
  quotas, ``acct``, ``syslog``, I/O ports, NUMA placement of other processes, ``io_uring``
  (which runs calls where a filter does not see them), obsolete calls (``uselib``, ``ustat``,
  ``sysfs``, ``_sysctl``, ``nfsservctl``, ``lookup_dcookie``);
* ``personality`` except the values Docker allows (no ``ADDR_NO_RANDOMIZE``, ``READ_IMPLIES_EXEC``);
* any call of another ABI: a 32-bit (``int 0x80``) call kills the process, an x32 call on
  x86_64 answers ENOSYS — their numbers differ, so a deny list of 64-bit numbers would not
  see them.

Refused calls fail with EPERM (Docker's answer), the process goes on and can report it.
Everything else is allowed. The program is pure data: `program` is tested instruction by
instruction with an interpreter in the tests, and for real in sandboxes on both arches.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass

# classic BPF opcodes (linux/filter.h, linux/bpf_common.h)
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K

# return values (linux/seccomp.h)
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000

# offsets into struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]
_NR, _ARCH, _ARG0_LO = 0, 4, 16

X32_SYSCALL_BIT = 0x40000000
CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS = 0x00020000, 0x02000000, 0x04000000
CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x08000000, 0x10000000, 0x20000000, 0x40000000
CLONE_NAMESPACES = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
#: the personality values Docker's profile allows: PER_LINUX, PER_LINUX32, UNAME26, both, and the query
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

#: refused with EPERM, by name; the numbers are per arch below
DENIED = (
    "open_by_handle_at", "name_to_handle_at",
    "mount", "umount2", "pivot_root", "open_tree", "open_tree_attr", "move_mount", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr",
    "unshare", "setns",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "init_module", "finit_module", "delete_module", "create_module", "query_module", "get_kernel_syms",
    "kexec_load", "kexec_file_load", "reboot",
    "bpf", "perf_event_open", "userfaultfd", "fanotify_init",
    "keyctl", "add_key", "request_key",
    "settimeofday", "clock_settime", "clock_adjtime",
    "swapon", "swapoff", "quotactl", "quotactl_fd", "acct", "syslog", "vhangup",
    "iopl", "ioperm",
    "mbind", "set_mempolicy", "get_mempolicy", "migrate_pages", "move_pages",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "uselib", "ustat", "sysfs", "_sysctl", "nfsservctl", "lookup_dcookie",
)


@dataclass(frozen=True)
class Arch:
    name: str
    audit: int  # AUDIT_ARCH_* of the native ABI (linux/audit.h)
    numbers: dict[str, int]  # syscall numbers of the native ABI
    foreign: tuple[int, ...]  # AUDIT_ARCH_* of other ABIs the CPU can enter (killed)
    x32: bool = False  # numbers with X32_SYSCALL_BIT set belong to the x32 ABI (ENOSYS)


#: arch/x86/entry/syscalls/syscall_64.tbl
X86_64 = Arch("x86_64", 0xC000003E, {
    "clone": 56, "ptrace": 101, "syslog": 103, "uselib": 134, "personality": 135, "ustat": 136, "sysfs": 139,
    "vhangup": 153, "pivot_root": 155, "_sysctl": 156, "acct": 163, "settimeofday": 164, "mount": 165,
    "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169, "iopl": 172, "ioperm": 173,
    "create_module": 174, "init_module": 175, "delete_module": 176, "get_kernel_syms": 177, "query_module": 178,
    "quotactl": 179, "nfsservctl": 180, "lookup_dcookie": 212, "clock_settime": 227, "mbind": 237,
    "set_mempolicy": 238, "get_mempolicy": 239, "kexec_load": 246, "add_key": 248, "request_key": 249,
    "keyctl": 250, "migrate_pages": 256, "unshare": 272, "move_pages": 279, "perf_event_open": 298,
    "fanotify_init": 300, "name_to_handle_at": 303, "open_by_handle_at": 304, "clock_adjtime": 305, "setns": 308,
    "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312, "finit_module": 313, "kexec_file_load": 320,
    "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "clone3": 435, "pidfd_getfd": 438, "mount_setattr": 442, "quotactl_fd": 443, "open_tree_attr": 467,
}, foreign=(0x40000003,), x32=True)  # i386

#: include/uapi/asm-generic/unistd.h (arm64 has no iopl, ioperm, create_module, query_module,
#: get_kernel_syms, uselib, ustat, sysfs, _sysctl)
AARCH64 = Arch("aarch64", 0xC00000B7, {
    "lookup_dcookie": 18, "umount2": 39, "mount": 40, "pivot_root": 41, "nfsservctl": 42, "vhangup": 58,
    "quotactl": 60, "acct": 89, "personality": 92, "unshare": 97, "kexec_load": 104, "init_module": 105,
    "delete_module": 106, "clock_settime": 112, "syslog": 116, "ptrace": 117, "reboot": 142,
    "settimeofday": 170, "add_key": 217, "request_key": 218, "keyctl": 219, "clone": 220, "swapon": 224,
    "swapoff": 225, "mbind": 235, "get_mempolicy": 236, "set_mempolicy": 237, "migrate_pages": 238,
    "move_pages": 239, "perf_event_open": 241, "fanotify_init": 262, "name_to_handle_at": 264,
    "open_by_handle_at": 265, "clock_adjtime": 266, "setns": 268, "process_vm_readv": 270,
    "process_vm_writev": 271, "kcmp": 272, "finit_module": 273, "bpf": 280, "userfaultfd": 282,
    "kexec_file_load": 294, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "clone3": 435, "pidfd_getfd": 438, "mount_setattr": 442, "quotactl_fd": 443, "open_tree_attr": 467,
}, foreign=(0x40000028,))  # 32-bit arm

ARCHES = {a.name: a for a in (X86_64, AARCH64)}


class _Asm:
    """Straight-line classic BPF with forward jumps to labels (8-bit offsets, checked)."""

    def __init__(self) -> None:
        self.code: list[tuple[int, str | int, str | int, int]] = []
        self.labels: dict[str, int] = {}

    def op(self, code: int, k: int, jt: str | int = 0, jf: str | int = 0) -> None:
        self.code.append((code, jt, jf, k))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def assemble(self) -> bytes:
        out = []
        for pc, (code, jt, jf, k) in enumerate(self.code):
            offs = []
            for j in (jt, jf):
                off = j if isinstance(j, int) else self.labels[j] - pc - 1
                if not 0 <= off <= 255:
                    raise ValueError(f"jump of {off} at {pc}: classic BPF jumps forward by at most 255")
                offs.append(off)
            out.append(struct.pack("=HBBI", code, offs[0], offs[1], k & 0xFFFFFFFF))
        return b"".join(out)


def program(arch: str) -> bytes:
    """The filter for processes of the host's `arch` (the CPU the kernel runs: an emulated
    aarch64 program under qemu-user makes x86_64 calls)."""
    a = ARCHES[arch]
    asm = _Asm()
    asm.op(_LD_W_ABS, _ARCH)
    asm.op(_JEQ_K, a.audit, jt=0, jf="foreign")
    asm.op(_LD_W_ABS, _NR)
    if a.x32:
        asm.op(_JGE_K, X32_SYSCALL_BIT, jt="enosys")
    for name in DENIED:
        if name in a.numbers:
            asm.op(_JEQ_K, a.numbers[name], jt="deny")
    asm.op(_JEQ_K, a.numbers["clone"], jt="clone")
    asm.op(_JEQ_K, a.numbers["clone3"], jt="enosys")
    asm.op(_JEQ_K, a.numbers["personality"], jt="personality")
    asm.op(_RET_K, RET_ALLOW)
    asm.label("clone")
    asm.op(_LD_W_ABS, _ARG0_LO)  # the flags: every CLONE_NEW* bit is in the low 32 bits
    asm.op(_JSET_K, CLONE_NAMESPACES, jt="deny")
    asm.op(_RET_K, RET_ALLOW)
    asm.label("personality")
    asm.op(_LD_W_ABS, _ARG0_LO)
    for value in PERSONALITIES:
        asm.op(_JEQ_K, value, jt="allow")
    asm.label("deny")
    asm.op(_RET_K, RET_ERRNO | errno.EPERM)
    asm.label("allow")
    asm.op(_RET_K, RET_ALLOW)
    asm.label("enosys")
    asm.op(_RET_K, RET_ERRNO | errno.ENOSYS)
    asm.label("foreign")
    asm.op(_RET_K, RET_KILL_PROCESS)
    return asm.assemble()
