"""Wheels into a layer without running the target Python (pypa `installer`).

Files go to the image Python's scheme (site-packages, scripts, headers, data) under the staging
root; RECORD is written for the final paths; console scripts get the image's interpreter in
their shebang; INSTALLER says enginefab. No bytecode is compiled: .pyc files would be for the
host's Python, not the image's. Before installing, the zip is checked: every member listed in
RECORD with the right hash, no symlinks, no duplicate names.
"""

from __future__ import annotations

import os
import stat
import tempfile
import zipfile
from pathlib import Path

from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.exceptions import InstallerError
from installer.sources import WheelFile

from enginefab.assemble.archives import refuse_corrupt
from enginefab.assemble.staging import WHITEOUT, Staging
from enginefab.core.definition import Input
from enginefab.core.errors import UnsafeArchiveError


def _precheck(staging: Staging, path: Path, label: str) -> None:
    with refuse_corrupt(label, "the wheel"), zipfile.ZipFile(path) as zf:
        seen: set[str] = set()
        count = staging.expansion(label, path.stat().st_size)
        for info in zf.infolist():
            name = info.filename
            if name in seen:
                raise UnsafeArchiveError(f"the wheel lists {name!r} twice", input=label,
                                         fix="the wheel is broken or hostile")
            seen.add(name)
            count.add(name, info.file_size)
            mode = (info.external_attr >> 16) & 0xFFFF
            if stat.S_ISLNK(mode):
                raise UnsafeArchiveError(f"the wheel holds a symlink {name!r}", input=label,
                                         fix="wheels may not contain symlinks")
            if name.startswith("/") or any(p == ".." for p in name.split("/")):
                raise UnsafeArchiveError(f"the wheel member {name!r} escapes site-packages", input=label,
                                         fix="the wheel is hostile; do not use it")
            if any(p.startswith(WHITEOUT) for p in name.split("/")):
                raise UnsafeArchiveError(f"the wheel member {name!r} has an OCI whiteout name (.wh.…): in a layer it "
                                         "would delete files of the layers below", input=label,
                                         fix="wheels may not carry names starting with .wh.; do not use it")


def stage_wheel(staging: Staging, path: Path, inp: Input, scheme: dict[str, str], interpreter: str) -> None:
    label = inp.ref
    _precheck(staging, path, label)
    # installer reads the distribution's name and version from the file name: give it one
    with tempfile.TemporaryDirectory(prefix="enginefab-whl-") as td:
        named = Path(td) / (inp.filename or f"{inp.name}-{inp.version}-py3-none-any.whl")
        os.symlink(path, named)
        _install(staging, named, label, scheme, interpreter)


def _install(staging: Staging, path: Path, label: str, scheme: dict[str, str], interpreter: str) -> None:
    dest = SchemeDictionaryDestination(
        scheme_dict=scheme,
        interpreter=interpreter,
        script_kind="posix",
        destdir=str(staging.root),
    )
    try:
        with refuse_corrupt(label, "the wheel"), WheelFile.open(path) as source:
            try:
                source.validate_record(validate_contents=True)
            except Exception as e:  # installer raises _WheelFileValidationError
                raise UnsafeArchiveError(f"the wheel's RECORD does not match its contents: {e}", input=label,
                                         fix="the wheel is corrupt or was modified; check the pin") from None
            install(source, dest, additional_metadata={"INSTALLER": b"enginefab\n"})
    except FileExistsError as e:
        raise UnsafeArchiveError(
            f"two wheels of this layer install the same file: {str(e).replace(str(staging.root), '')}",
            input=label, fix="split the conflicting wheels into different layers or drop one",
        ) from None
    except ValueError as e:
        raise UnsafeArchiveError(f"the wheel would write outside its scheme: {e}", input=label) from None
    except (InstallerError, zipfile.BadZipFile) as e:
        raise UnsafeArchiveError(f"cannot install the wheel: {e}", input=label) from None
