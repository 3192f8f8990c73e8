"""Replay: `enginefab --help`, `list`, `lock --check` and a no-op `build` print, from a cache, what
their last run printed on exactly the same inputs, without importing typer, pydantic or any stage.

A run is recorded only if it was pure: it opened no file for writing (but the debug log and
bytecode), started no process and opened no socket, and every file it read lies in engines/,
build/, the enginefab package or the interpreter's own directories. The key is the sha256 of the
command line, the working directory, the environment, whether the output is a terminal (and its
size), the interpreter, the directories on sys.path (installed distributions) and of every file
(name and bytes) under engines/, build/ and the package. The record also names every file and
directory the run read elsewhere (the sha256 of its bytes, or of its listing; a file of 1 MiB
or more by its size, mtime, ctime and inode), and the stat of every
blob of the download cache build/ names (lock --check compares them with the pins): a replay
re-checks all of them first. Any changed byte is a miss, and a miss runs the command in full.

`build` writes, so it is never pure: it is recorded only when a run built nothing (the OCI layout
and the store's blobs the same after as before, cli/build.py names them through
`watch_outputs`), and the record holds the layout (the sha256 of every file under 1 MiB, the
size, mtime, ctime and inode of the others, and every name) and the stat of every store blob the
layout holds: a replay re-checks them, so it prints "nothing to do" only while what the build
would leave is in place. A replay of a no-op build runs no assembler and no transport.

ENGINEFAB_NO_REPLAY=1 turns this off. The cache is <cache>/replay/, one file per key, the newest
64 kept.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sys
from pathlib import Path

from enginefab import __version__
from enginefab.core.errors import EnginefabError
from enginefab.core.settings import Settings

#: environment variables that differ between two runs of one shell and change no output
_VOLATILE_ENV = frozenset({"_", "PWD", "OLDPWD", "SHLVL"})
_PACKAGE = Path(__file__).resolve().parent.parent
_HEX64 = re.compile(rb"[0-9a-f]{64}")
_SMALL = 1 << 20


def replayable(argv: list[str]) -> bool:
    """`--help`, `list`, `lock --check` (not --verify, nor a lock that resolves) and `build` (not with a
    shared --cache or --reachable-layers, whose results depend on what the network reaches)."""
    if argv in ([], ["--help"]):
        return True  # the root's help: the command table and docstrings, all in the package
    if argv[0] not in ("list", "lock", "build"):
        return False
    opts = {a.partition("=")[0] for a in argv[1:]}
    if "--help" in opts:
        return False
    if argv[0] == "build":
        return not opts & {"--cache", "--reachable-layers"}
    return argv[0] == "list" or ("--check" in opts and not opts & {"--verify", "--add"})


def _tree(root: Path) -> list:
    """(relative name, sha256) of every file under `root`, sorted; bytecode caches left out."""
    out = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for f in sorted(files):
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out.append((os.path.relpath(p, root), hashlib.sha256(fh.read()).hexdigest()))
    return out


def _listing(path: str) -> str | None:
    try:
        return hashlib.sha256("\0".join(sorted(os.listdir(path or "."))).encode()).hexdigest()
    except OSError:
        return None


def _file(path: str):
    """A small file by the sha256 of its bytes; one of 1 MiB or more (a wheel in the download
    cache, a layer) by its stat: size, mtime, ctime, inode (a write changes the ctime)."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if st.st_size >= _SMALL:
                return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
            return hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        return None


def _stat(path: str) -> list | None:
    try:
        s = os.stat(path)
    except OSError:
        return None
    return [s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino]


def _terminal(stream) -> list:
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return [False]
    if not tty:
        return [False]
    try:
        return [True, *os.get_terminal_size(stream.fileno())]
    except OSError:
        return [True]


def key(argv: list[str], env: dict[str, str]) -> str:
    """The sha256 of everything a run's output is a function of (its environment as it started)."""
    root = Settings.from_env(env).root
    state = {
        "version": __version__, "argv": argv, "cwd": os.getcwd(), "root": str(root),
        "env": sorted((k, v) for k, v in env.items() if k not in _VOLATILE_ENV),
        "terminal": [_terminal(sys.stdout), _terminal(sys.stderr)],
        "python": [sys.executable, sys.version, sys.path, [_listing(p) for p in sys.path if os.path.isdir(p)]],
        "engines": _tree(root / "engines"), "build": _tree(root / "build"), "package": _tree(_PACKAGE),
    }
    return hashlib.sha256(json.dumps(state).encode()).hexdigest()


def _blobs(settings: Settings) -> list[str]:
    """The download cache's path of every sha256 build/ names (lock --check stats them)."""
    names: set[bytes] = set()
    for p in sorted((settings.root / "build").glob("*.json")):
        names.update(_HEX64.findall(p.read_bytes()))
    base = settings.downloads / "sha256"
    return [str(base / n.decode()) for n in sorted(names)]


def _outputs(out: str, blobs: str) -> dict:
    """What a build leaves: every file of the layout `out` (small ones by sha256, others by
    stat), and the stat of each store blob (in `blobs`) the layout holds."""
    files = []
    for dirpath, dirs, names in os.walk(out):
        dirs.sort()
        files.append([os.path.relpath(dirpath, out), os.lstat(dirpath).st_mode])  # a read-only one: a full run
        for f in sorted(names):
            p = os.path.join(dirpath, f)
            files.append([os.path.relpath(p, out), os.lstat(p).st_mode, _file(p)])
    try:
        names = sorted(os.listdir(os.path.join(out, "blobs", "sha256")))
    except OSError:
        names = []
    store = [[n, _stat(os.path.join(blobs, n))] for n in names]
    return {"out": files, "store": store, "listing": _listing(blobs), "modes": [_mode(blobs), _mode(os.path.dirname(
        os.path.dirname(blobs)))]}


def _mode(path: str) -> int | None:
    try:
        return os.stat(path).st_mode
    except OSError:
        return None


_ACTIVE: list = []  # the recorder of this run, if any


def watch_outputs(out: Path, store: Path) -> None:
    """A build names where its results go (before it builds): see the module's docstring. What
    it reads there is covered by the snapshot of the layout and of the store's blobs."""
    for rec in _ACTIVE:
        rec.outputs = (os.path.abspath(out), os.path.abspath(store / "blobs" / "sha256"))
        rec.before = _outputs(*rec.outputs)
        rec.produced = (rec.outputs[0], os.path.abspath(store))


def _record_path(k: str, env: dict[str, str]) -> Path:
    return Settings.from_env(env).cache / "replay" / f"{k}.json"


def replay(argv: list[str]) -> int | None:
    """Print a recorded run's output and return its exit code, or None (then run the command)."""
    if os.environ.get("ENGINEFAB_NO_REPLAY") or not replayable(argv):
        return None
    try:
        env = dict(os.environ)
        rec = json.loads(_record_path(key(argv, env), env).read_text())
    except (OSError, ValueError, EnginefabError):  # no record; or settings the full run reports
        return None
    if any(_file(p) != h for p, h in rec["read"]) or any(_listing(p) != h for p, h in rec["listed"]) \
            or any(_stat(p) != s for p, s in rec["stat"]):
        return None
    if "outputs" in rec and _outputs(*rec["outputs"]) != rec["left"]:
        return None
    streams = {1: sys.stdout, 2: sys.stderr}
    for fd, data in rec["output"]:
        streams[fd].flush()
        streams[fd].buffer.write(base64.b64decode(data))
        streams[fd].buffer.flush()
    return rec["exit"]


class _Tee:
    """A text stream that also keeps every byte written to it (and to its buffer) in `chunks`."""

    def __init__(self, stream, fd: int, chunks: list) -> None:
        self._stream, self._fd, self._chunks = stream, fd, chunks
        self.buffer = _BufferTee(stream.buffer, fd, chunks)

    def write(self, s: str) -> int:
        self._chunks.append((self._fd, s.encode(self._stream.encoding, self._stream.errors or "strict")))
        return self._stream.write(s)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


class _BufferTee:
    def __init__(self, buffer, fd: int, chunks: list) -> None:
        self._buffer, self._fd, self._chunks = buffer, fd, chunks

    def write(self, b) -> int:
        self._chunks.append((self._fd, bytes(b)))
        return self._buffer.write(b)

    def __getattr__(self, name: str):
        return getattr(self._buffer, name)


class _Recorder:
    """An audit hook that notes what a run reads, and whether it did anything but read."""

    _IMPURE = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.fork", "os.remove", "os.rename",
               "os.rmdir", "shutil.rmtree", "shutil.move", "socket.connect", "socket.bind", "socket.getaddrinfo")

    def __init__(self, settings: Settings) -> None:
        root = settings.root
        self.active, self.pure = True, True
        self.outputs: tuple[str, str] | None = None  # a build's layout and store blobs (watch_outputs)
        self.before: dict | None = None
        self.produced: tuple[str, ...] = ()
        self.read: set[str] = set()
        self.listed: set[str] = set()
        tops = {str(root / "engines"), str(root / "build"), str(_PACKAGE), sys.prefix, sys.base_prefix, sys.exec_prefix,
                sys.base_exec_prefix, sys.pycache_prefix or str(_PACKAGE)}  # all in the key, or the interpreter's
        self._covered = tuple(tops)
        self._writable = (str(settings.debug_log.parent),)

    @staticmethod
    def _under(path: str, tops) -> bool:
        return any(path == t or path.startswith(t.rstrip("/") + "/") for t in tops)

    def hook(self, event: str, args: tuple) -> None:
        if not self.active:
            return
        if event.startswith(self._IMPURE):
            self.pure = False
        elif event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.path.abspath(os.fsdecode(args[0]))
            mode, flags = args[1], args[2]
            writes = any(c in (mode or "") for c in "wax+") or bool((flags or 0) & (os.O_WRONLY | os.O_RDWR))
            if writes:
                if not (self._under(path, self._writable) or path.endswith(".pyc") or "/__pycache__/" in path):
                    self.pure = False
            elif not self._under(path, self._covered) and not path.startswith("/proc/self/"):
                self.read.add(path)  # (/proc/self: this process's own state, no input)
        elif event in ("os.listdir", "os.scandir"):
            path = args[0]
            if isinstance(path, int):
                self.pure = False  # a listing by descriptor: not something a replay could re-check
                return
            path = os.path.abspath(os.fsdecode(path if path is not None else "."))
            if not self._under(path, self._covered):
                self.listed.add(path)


def _exit_code(e: SystemExit) -> int | None:
    return 0 if e.code is None else e.code if isinstance(e.code, int) else None


def recorded(argv: list[str], run) -> None:
    """Run the command (`run()`); if the run was pure and its inputs held still, keep what it printed."""
    if os.environ.get("ENGINEFAB_NO_REPLAY") or not replayable(argv):
        return run()
    env = dict(os.environ)  # a build sets variables as it runs
    try:
        before, settings = key(argv, env), Settings.from_env(env)
    except (OSError, EnginefabError):
        return run()  # the full run reports it
    rec, chunks = _Recorder(settings), []
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(out, 1, chunks), _Tee(err, 2, chunks)
    sys.addaudithook(rec.hook)  # an audit hook cannot be removed: it is switched off below
    _ACTIVE.append(rec)
    code = None
    try:
        run()
        code = 0
    except SystemExit as e:
        code = _exit_code(e)
        raise
    finally:
        rec.active = False
        _ACTIVE.remove(rec)
        sys.stdout, sys.stderr = out, err
        if code is not None and _kept(argv, rec, code):
            _store(argv, (env, before), settings, rec, chunks, code)


def _kept(argv: list[str], rec: _Recorder, code: int) -> bool:
    """A pure run; or a build that succeeded and changed nothing of what it leaves."""
    if argv[0] != "build":
        return rec.pure
    return code == 0 and rec.outputs is not None and rec.before == _outputs(*rec.outputs)


def _store(argv: list[str], started: tuple[dict, str], settings: Settings, rec: _Recorder, chunks: list,
           code: int) -> None:
    env, before = started
    blobs = _blobs(settings) if argv[0] == "lock" else []
    read = sorted(p for p in rec.read if not rec._under(p, rec.produced))
    listed = sorted(p for p in rec.listed if not rec._under(p, rec.produced))
    record = {"exit": code, "read": [[p, _file(p)] for p in read], "listed": [[p, _listing(p)] for p in listed],
              "stat": [[p, _stat(p)] for p in blobs],
              "output": [[fd, base64.b64encode(b).decode()] for fd, b in chunks]}
    if rec.outputs is not None:
        record |= {"outputs": list(rec.outputs), "left": rec.before}
    if key(argv, env) != before:
        return  # an input changed while the command ran: what it printed may belong to neither
    path = _record_path(before, env)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)
        _prune(path.parent)
    except OSError:
        pass  # a read-only cache: every run is a full one


_KEEP = 64  # records kept (the newest): every environment has its own


def _prune(directory: Path) -> None:
    records = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in records[_KEEP:]:
        old.unlink(missing_ok=True)
