"""The settings of one run: where things live, how parallel and how patient to be, who builds.

Built once, at the command line's edge, from its options and the environment
(`Settings.from_env(os.environ, store=…)`), then passed down as arguments: no module below the
CLI reads an environment variable (tests/test_settings.py scans for one). `VARIABLES` is the
table of every variable read here, its option and its default (docs/usage.md shows it).

A variable that is set but empty counts as unset; one that does not parse is an error naming
the variable and its fix (exit 2), as a bad option is.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from enginefab.core.archivelimits import DEFAULT as DEFAULT_LIMITS
from enginefab.core.archivelimits import ArchiveLimits
from enginefab.core.errors import BuildError, EnginefabError
from enginefab.core.httpoptions import DEFAULT as DEFAULT_HTTP
from enginefab.core.httpoptions import HttpOptions
from enginefab.core.ocischema import PACKAGED as PACKAGED_SCHEMAS

#: the provenance's builder identity when ENGINEFAB_BUILDER_ID names none
DEFAULT_BUILDER = "urn:enginefab:builder:local"
#: seconds one run step may take
RUN_TIMEOUT = 7200.0

#: (variable, option, default, what it sets) — every environment variable enginefab reads
VARIABLES: tuple[tuple[str, str, str, str], ...] = (
    ("ENGINEFAB_ROOT", "--root (nix flake-check)", "the nearest parent of the working directory holding "
     "engines/ (and pyproject.toml or engines/platforms.toml)", "the matrix checkout (engines/, build/, registry/)"),
    ("ENGINEFAB_CACHE", "", "$XDG_CACHE_HOME/enginefab, else ~/.cache/enginefab",
     "the download cache (downloads/), the default store, logs, local registries"),
    ("ENGINEFAB_STORE", "--store", "$ENGINEFAB_CACHE/store", "the content-addressed store"),
    ("ENGINEFAB_MIRRORS", "", "registry/mirrors.toml of the checkout", "the mirrors file"),
    ("ENGINEFAB_THREADS", "", "the CPUs this process may use", "compression threads per layer"),
    ("ENGINEFAB_RUN_TIMEOUT", "", "7200 (seconds)", "how long one run step may take"),
    ("ENGINEFAB_ARCHIVE_MAX_BYTES", "--archive-max-bytes", "17179869184 (16 GiB)",
     "most bytes one input archive may expand to"),
    ("ENGINEFAB_ARCHIVE_MAX_ENTRIES", "--archive-max-entries", "50000", "most entries in one input archive"),
    ("ENGINEFAB_ARCHIVE_MAX_RATIO", "--archive-max-ratio", "100",
     "most expanded bytes per archive byte, past 16 MiB"),
    ("ENGINEFAB_QUIET", "--json (also quiet)", "unset (messages and progress on stderr)",
     "1: no messages or progress on stderr"),
    ("ENGINEFAB_BUILDER_ID", "", DEFAULT_BUILDER, "the builder identity in the provenance (e.g. the CI job's URL)"),
    ("ENGINEFAB_OCI_SCHEMAS", "", "the schemas shipped in the package", "the OCI JSON schemas `validate` uses"),
    ("ENGINEFAB_REGISTRY_USER, ENGINEFAB_REGISTRY_PASSWORD", "", "the docker config (and its credential helpers)",
     "registry credentials for push, pull, --cache"),
)

_ARCHIVE = (("max_bytes", "ENGINEFAB_ARCHIVE_MAX_BYTES"), ("max_entries", "ENGINEFAB_ARCHIVE_MAX_ENTRIES"),
            ("max_ratio", "ENGINEFAB_ARCHIVE_MAX_RATIO"))
_PATHS = {"root", "store", "mirrors", "oci_schemas"}


@dataclass(frozen=True)
class Settings:
    root: Path
    cache: Path
    store: Path
    #: an explicit mirrors file ($ENGINEFAB_MIRRORS); None: registry/mirrors.toml of `root`
    mirrors: Path | None = None
    #: compression threads; None: the CPUs this process may use
    threads: int | None = None
    run_timeout: float = RUN_TIMEOUT
    http: HttpOptions = DEFAULT_HTTP
    archive: ArchiveLimits = DEFAULT_LIMITS
    quiet: bool = False
    builder_id: str = DEFAULT_BUILDER
    oci_schemas: Path = PACKAGED_SCHEMAS
    #: the environment as the edge saw it, read only for credentials (ENGINEFAB_REGISTRY_*,
    #: DOCKER_CONFIG, a target's user_env) and for what child processes inherit (PATH)
    environ: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), compare=False, repr=False)

    @property
    def downloads(self) -> Path:
        """The content-addressed cache of fetched inputs, shared by every store."""
        return self.cache / "downloads"

    @property
    def blob_homes(self) -> Path:
        """Which repository of a registry holds a blob (push mounts it from there next time)."""
        return self.cache / "blob-homes"

    @property
    def debug_log(self) -> Path:
        return self.cache / "logs" / "debug.log"

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, cwd: Path | None = None,
                 archive_max_bytes: int | None = None, archive_max_entries: int | None = None,
                 archive_max_ratio: int | None = None, **overrides: object) -> Settings:
        """The settings from `environ`, an option given (not None) beating its variable."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"Settings has no field {', '.join(unknown)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        env = {k: v for k, v in environ.items() if v.strip()}  # set but empty: unset
        cache = Path(given.pop("cache", None) or env.get("ENGINEFAB_CACHE") or _xdg_cache(env))  # type: ignore[arg-type]
        flags = {"max_bytes": archive_max_bytes, "max_entries": archive_max_entries, "max_ratio": archive_max_ratio}
        base = cls(
            root=Path(env["ENGINEFAB_ROOT"]).resolve() if "ENGINEFAB_ROOT" in env else find_root(cwd or Path.cwd()),
            cache=cache,
            store=Path(env.get("ENGINEFAB_STORE") or cache / "store"),
            mirrors=Path(env["ENGINEFAB_MIRRORS"]) if "ENGINEFAB_MIRRORS" in env else None,
            threads=_whole(env, "ENGINEFAB_THREADS", floor=1),
            run_timeout=_seconds(env, "ENGINEFAB_RUN_TIMEOUT"),
            archive=ArchiveLimits(**{k: _limit(flags[k], env, var, getattr(DEFAULT_LIMITS, k)) for k, var in _ARCHIVE}),
            quiet=env.get("ENGINEFAB_QUIET") == "1",
            builder_id=env.get("ENGINEFAB_BUILDER_ID") or DEFAULT_BUILDER,
            oci_schemas=Path(env["ENGINEFAB_OCI_SCHEMAS"]) if "ENGINEFAB_OCI_SCHEMAS" in env else PACKAGED_SCHEMAS,
            environ=MappingProxyType(dict(environ)),
        )
        for k in _PATHS & set(given):
            given[k] = Path(given[k]).resolve() if k == "root" else Path(given[k])  # type: ignore[arg-type]
        return replace(base, **given)  # type: ignore[arg-type]


def find_root(start: Path) -> Path:
    """The checkout holding engines/ and build/: the nearest parent of `start` with engines/ (and
    a pyproject.toml or engines/platforms.toml), else the checkout this package was installed
    from (editable installs)."""
    here = start.resolve()
    for p in (here, *here.parents):
        if (p / "engines").is_dir() and ((p / "pyproject.toml").is_file() or (p / "engines" / "platforms.toml").is_file()):
            return p  # this checkout, or a project of its own (`enginefab init`)
    pkg = Path(__file__).resolve().parents[2]
    if (pkg / "engines").is_dir():
        return pkg
    return here


def _xdg_cache(env: Mapping[str, str]) -> Path:
    xdg = env.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path(env.get("HOME") or Path.home()) / ".cache") / "enginefab"


def _whole(env: Mapping[str, str], var: str, *, floor: int) -> int | None:
    if var not in env:
        return None
    try:
        return max(floor, int(env[var]))
    except ValueError:
        raise EnginefabError(f"{var}={env[var]!r} is not a whole number",
                             fix=f"set {var} to a positive integer, or unset it") from None


def _seconds(env: Mapping[str, str], var: str) -> float:
    if var not in env:
        return RUN_TIMEOUT
    try:
        value = float(env[var])
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise EnginefabError(f"{var}={env[var]!r} is not a positive number of seconds",
                             fix=f"set {var} to seconds (e.g. 7200), or unset it")
    return value


def _limit(flag: int | None, env: Mapping[str, str], var: str, default: int) -> int:
    """An archive limit: the flag, else the variable, else the default; positive."""
    if flag is None and var in env:
        try:
            flag = int(env[var])
        except ValueError:
            raise BuildError(f"{var}={env[var]!r} is not a whole number",
                             fix=f"set {var} to a positive integer, or unset it") from None
    if flag is not None and flag <= 0:
        raise BuildError(f"an archive limit must be positive (got {flag} for {var})", fix="pass a positive integer")
    return default if flag is None else flag

