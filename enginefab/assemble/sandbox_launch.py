"""Start bubblewrap inside a user namespace of our own: ``python -I -S sandbox_launch.py SPEC -- BWRAP…``.

A script, not a module: the host's Python runs it without site or enginefab (it starts in a few
milliseconds), as the first process of every sandbox. It forks; the child makes a new user and
mount namespace, the parent writes the child's uid/gid maps (an identity map of every id when
we are root, so that the image's owners are the real ones; our own id as 0 otherwise), then the
child, root of that namespace and of nothing else:

1. makes its mounts private, so nothing below reaches the host's mount table;
2. mounts a binfmt_misc of its own (Linux ≥ 6.7 gives each user namespace one) and registers
   qemu-user for a foreign arch with the ``F`` flag: the kernel opens qemu now, so an aarch64
   program and every program it starts run under qemu with no host path visible in the sandbox;
3. mounts an overlay (lower: an unpacked image, read-only; upper: a tmpfs) where a sandbox
   needs a writable root that leaves the image as it was (a container's writable layer);
4. executes bubblewrap, which makes the other namespaces, drops capabilities and loads the
   seccomp filter. A capability it keeps is one of this user namespace, never the host's.

SPEC is JSON: ``uid_map``, ``gid_map``, ``setgroups`` ("allow"/"deny"), ``binfmt`` (list of
``{"dir", "rule"}``), ``overlay`` (``{"lower", "scratch"}`` or null: a tmpfs on ``scratch``
holds the overlay's upper layer and the merged root at ``scratch/merged``),
``error_fd`` (where a setup failure is written before exit status 125), ``parent`` (the pid
whose death ends the sandbox).
"""

import ctypes
import json
import os
import sys

CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 16384, 1 << 18
PR_SET_PDEATHSIG = 1
SETUP_FAILED = 125

libc = ctypes.CDLL(None, use_errno=True)


def fail(spec, what):
    err = ctypes.get_errno()
    msg = f"{what}: {os.strerror(err)}" if err else what
    os.write(spec["error_fd"], msg.encode())
    os._exit(SETUP_FAILED)


def mount(spec, source, target, fstype, flags, data, what):
    if libc.mount(source.encode() if source else None, target.encode(), fstype.encode() if fstype else None,
                  flags, data.encode() if data else None) != 0:
        fail(spec, what)


def child(spec, argv, ready_w, go_r, parent):
    libc.prctl(PR_SET_PDEATHSIG, 9)
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
        fail(spec, "cannot make a user namespace (unshare)")
    os.write(ready_w, b"1")
    if os.read(go_r, 1) != b"1":
        os._exit(SETUP_FAILED)
    mount(spec, None, "/", None, MS_REC | MS_PRIVATE, None, "cannot make the mounts private")
    o = spec.get("overlay")
    if o:
        mount(spec, "tmpfs", o["scratch"], "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700",
              "cannot mount a tmpfs for the overlay")
        for d in ("upper", "work", "merged"):
            os.mkdir(os.path.join(o["scratch"], d), 0o755)
    for b in spec["binfmt"]:
        os.makedirs(b["dir"], exist_ok=True)
        mount(spec, "binfmt_misc", b["dir"], "binfmt_misc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None,
              "cannot mount a binfmt_misc of the sandbox's own (needs Linux 6.7 or later)")
        try:
            with open(os.path.join(b["dir"], "register"), "wb") as f:
                f.write(b["rule"].encode())
        except OSError as e:
            ctypes.set_errno(e.errno or 0)
            fail(spec, f"cannot register {b['rule'].split(':')[1]} in binfmt_misc")
    if o:
        s = o["scratch"]
        opts = f"lowerdir={o['lower']},upperdir={s}/upper,workdir={s}/work,userxattr"
        mount(spec, "overlay", f"{s}/merged", "overlay", MS_NODEV, opts, "cannot mount the overlay over the image")
    os.set_inheritable(spec["error_fd"], False)  # closed at exec: nothing in the sandbox can write to it
    libc.prctl(PR_SET_PDEATHSIG, 9)  # after the namespace change, which clears it
    if os.getppid() != parent:  # the launcher is gone already
        os._exit(SETUP_FAILED)
    os.execv(argv[0], argv)  # runs: bwrap (sandbox.execute puts it first)


def main():
    spec = json.loads(sys.argv[1])
    argv = sys.argv[3:] if sys.argv[2:3] == ["--"] else sys.argv[2:]
    libc.prctl(PR_SET_PDEATHSIG, 9)  # a build killed with -9 takes its sandbox with it
    if os.getppid() != spec["parent"]:
        os._exit(SETUP_FAILED)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(go_w)
        try:
            child(spec, argv, ready_w, go_r, parent)
        except OSError as e:
            os.write(spec["error_fd"], f"cannot start the sandbox: {e}".encode())
        os._exit(SETUP_FAILED)
    os.close(ready_w)
    os.close(go_r)
    if os.read(ready_r, 1) == b"1":
        try:
            for name in ("uid_map", "setgroups", "gid_map"):
                with open(f"/proc/{pid}/{name}", "w") as f:
                    f.write(spec[name])
            os.write(go_w, b"1")
        except OSError as e:
            os.write(spec["error_fd"], f"cannot write the sandbox's {name}: {e.strerror}".encode())
    os.close(go_w)
    os.close(spec["error_fd"])
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
