"""Run a command with the network cut: `python tests/offline.py CMD ARGS…` (`./dev test --unit` uses it).

The command runs in a network namespace of its own that has only a loopback interface (up, so
servers on 127.0.0.1 still work): nothing it starts, the test process or any subprocess, can
reach another host; a connect fails at once (no route), a name does not resolve. Unprivileged,
the namespace belongs to a new user namespace in which the user keeps their own uid and gid (no
fake root: file permissions behave as outside). Where namespaces are not allowed (a container
without them), it says so and runs the command anyway: the in-process guard of tests/netguard.py
still fails a unit test that connects anywhere but loopback.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import sys

CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def unshare() -> None:
    """Move this (single-threaded) process into a new network namespace (and, unprivileged, a
    user namespace owning it); OSError if the kernel or the container does not allow it."""
    flags = CLONE_NEWNET if os.getuid() == 0 else CLONE_NEWUSER | CLONE_NEWNET
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def set_up(uid: int, gid: int) -> None:
    """Inside the new namespaces: our own ids, loopback up."""
    if uid != 0:  # keep our own ids inside; the capabilities of the new namespace end at exec
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sh22x", b"lo", 0))
        lo_flags = struct.unpack("16sh22x", ifr)[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", lo_flags | IFF_UP))


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit("usage: python tests/offline.py CMD [ARGS…]")
    uid, gid = os.getuid(), os.getgid()
    try:
        unshare()
    except OSError as e:
        print(f"offline: the network is NOT cut for subprocesses (a network namespace: {e.strerror or e}); "
              "unit tests still fail on any non-loopback connect they make in-process", file=sys.stderr)
    else:
        try:
            set_up(uid, gid)
        except OSError as e:  # half made: never run the tests in it
            sys.exit(f"offline: could not set up the new namespace ({e}); `./dev test -m unit` runs the tier "
                     "without it (the in-process guard only)")
        os.environ["ENGINEFAB_NETWORK_CUT"] = "namespace"
    os.execvp(argv[0], argv)  # runs: self (./dev: the virtualenv's python running pytest)


if __name__ == "__main__":
    main(sys.argv[1:])
