"""Run a program in an unpacked image the way a container runtime (runc, as podman or Docker
start it) runs a container of it, in the sandbox of `enginefab.assemble.sandbox`.

* **user**: the config's ``User`` (``uid``, ``name``, ``uid:gid``, ``name:group``…), resolved
  with the image's own ``/etc/passwd`` and ``/etc/group``, with the user's supplementary groups
  from ``/etc/group``; no capabilities for a user other than root;
* **environment**: the config's ``Env``, plus ``PATH`` and ``HOME`` (from ``/etc/passwd``,
  else ``/``) when it has none;
* **working directory**: the config's ``WorkingDir``, created when the image lacks it;
* **entrypoint**: the arguments replace ``Cmd`` and are appended to ``Entrypoint`` (what
  ``podman run IMAGE ARGS…`` does);
* **file system**: the image writable (an overlay in memory, discarded afterwards), tmpfs of
  mode 1777 on ``/tmp``, ``/var/tmp`` and ``/dev/shm``; network: none.

The switch to the image's user is made by the image's own Python (`PRELUDE`, run with ``-I -S``
so that nothing of the image runs before it): it starts as root of the sandbox's user namespace
holding CAP_SETUID and CAP_SETGID only, sets groups, gid and uid (which clears those), changes
to the working directory and executes the program — as a runtime's init does.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from enginefab.assemble import sandbox
from enginefab.assemble.rootfs import resolve_in
from enginefab.core.definition import Definition
from enginefab.core.errors import CheckError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_ID = 2**32 - 2
_MAX_DB = 4 << 20  # bytes of /etc/passwd or /etc/group read

#: argv: uid gid groups(comma-separated) workdir program args…
PRELUDE = """\
import os, sys
uid, gid, groups, cwd, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:]
def die(code, msg):
    sys.stderr.write('enginefab: ' + msg + '\\n')
    sys.exit(code)
if not os.path.isdir(cwd):
    try:
        os.makedirs(cwd, 0o755)
    except OSError as e:
        die(126, 'cannot create the working directory %s: %s' % (cwd, e.strerror))
os.setgroups([int(g) for g in groups.split(',') if g])
os.setgid(gid)
os.setuid(uid)
try:
    os.chdir(cwd)
except OSError as e:
    die(126, 'cannot change to the working directory %s as uid %d: %s' % (cwd, uid, e.strerror))
try:
    os.execvp(argv[0], argv)
except OSError as e:
    die(127 if e.errno == 2 else 126, 'cannot execute %s: %s' % (argv[0], e.strerror))
"""


@dataclass(frozen=True)
class User:
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    name: str | None


def _db(root: Path, rel: str) -> list[list[str]]:
    """The colon-separated entries of an image's /etc/passwd or /etc/group (a regular file only)."""
    try:
        path = resolve_in(root, rel, follow_last=True)
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            return []
        with open(path, "rb") as f:
            text = f.read(_MAX_DB).decode(errors="replace")
    except OSError:
        return []
    return [ln.split(":") for ln in text.splitlines() if ln and not ln.startswith("#")]


def _id(value: str, what: str, image: str) -> int:
    n = int(value)
    if not 0 <= n <= MAX_ID:
        raise CheckError(f"the image's {what} {value} is out of range", image=image,
                         fix=f"use an id from 0 to {MAX_ID} in the image's config")
    return n


def _named(db: list[list[str]], name: str, what: str, file: str, image: str) -> list[str]:
    entry = next((e for e in db if e[0] == name), None)
    if entry is None:
        raise CheckError(f"the image's {what} {name!r} is not in its {file}", image=image,
                         fix=f"add the {what} to {file} in a layer, or set a numeric id in the image's config")
    return entry


def user_of(root: Path, spec: str, *, image: str = "") -> User:
    """The image's `spec` (config.User) as the runtime resolves it, from the image's own files."""
    name, _, group = (spec or "0").partition(":")
    passwd = [e for e in _db(root, "etc/passwd") if len(e) >= 7 and e[2].isdigit() and e[3].isdigit()]
    groups_db = [e for e in _db(root, "etc/group") if len(e) >= 4 and e[2].isdigit()]
    if name.isdigit():
        uid = _id(name, "uid", image)
        pw = next((e for e in passwd if int(e[2]) == uid), None)
    else:
        pw = _named(passwd, name, "user", "/etc/passwd", image)
        uid = _id(pw[2], "uid", image)
    if not group:
        gid = int(pw[3]) if pw else 0
    else:
        gid = _id(group if group.isdigit() else _named(groups_db, group, "group", "/etc/group", image)[2], "gid", image)
    extra = sorted({int(e[2]) for e in groups_db if pw and pw[0] in e[3].split(",") and int(e[2]) <= MAX_ID})
    return User(uid, gid, tuple(dict.fromkeys([gid, *extra])), pw[5] if pw and pw[5] else "/", pw[0] if pw else None)


def environment(env: Mapping[str, str], user: User) -> dict[str, str]:
    out = dict(env)
    out.setdefault("PATH", DEFAULT_PATH)
    out.setdefault("HOME", user.home)
    return out


def _tmpfs(root: Path) -> tuple[str, ...]:
    """/var/tmp gets a tmpfs unless the image makes it a symbolic link (then it points somewhere)."""
    try:
        if stat.S_ISLNK(os.lstat(root / "var" / "tmp").st_mode):
            return ()
    except OSError:
        pass
    return ("/var/tmp",) if (root / "var").is_dir() and not (root / "var").is_symlink() else ()


def argv_of(defn: Definition, argv: list[str], *, entrypoint: bool = True) -> list[str]:
    """What the runtime executes for `podman run IMAGE argv…`."""
    return [*(defn.config.entrypoint or []), *argv] if entrypoint else list(argv)


def run(defn: Definition, root: Path, argv: list[str], *, env: Mapping[str, str] | None = None,
        entrypoint: bool = True, timeout: float = 600, extra: tuple[str, ...] = (), as_user: User | None = None,
        launcher: str = PRELUDE, launcher_args: tuple[str, ...] = ()) -> sandbox.Result:
    """Run `argv` in the image unpacked at `root` (see the module's docstring); `env` adds to
    the image's, `entrypoint=False` runs `argv` itself (container-structure-test's command tests).
    `as_user` replaces the config's user (the service's own, for a model image); `launcher` is
    the program that drops to it (argv: uid gid groups cwd, `launcher_args`, then `argv`)."""
    user = as_user or user_of(root, defn.config.user, image=defn.image.alias)
    sb = sandbox.Sandbox(root=root, arch=defn.image.arch, env=environment({**defn.config.env, **(env or {})}, user),
                         cwd="/", mode="image", caps=sandbox.DROP_CAPS if user.uid else sandbox.STEP_CAPS,
                         tmpfs=_tmpfs(root), extra=extra)
    cmd = [defn.python.interpreter, "-I", "-S", "-c", launcher, str(user.uid), str(user.gid),
           ",".join(map(str, user.groups)), defn.config.workdir or "/", *launcher_args,
           *argv_of(defn, argv, entrypoint=entrypoint)]
    try:
        return sandbox.run(sb, cmd, timeout=timeout)
    except sandbox.SandboxError as e:
        raise CheckError(e.message, image=defn.image.alias, fix=e.fix) from e
