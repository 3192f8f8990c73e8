"""The image's Python as a target: the PEP 425 tags it accepts (for its version, arch and glibc),
uv's name for its platform, and the install scheme its wheels go to. Pure: no Python is run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from packaging.tags import Tag, compatible_tags, cpython_tags

#: manylinux levels uv can resolve for (its --python-platform values)
UV_MANYLINUX = [(2, 17), (2, 28), (2, 31), (2, 32), (2, 33), (2, 34), (2, 35), (2, 36), (2, 37), (2, 38), (2, 39), (2, 40)]


@dataclass(frozen=True)
class Target:
    python: str  # "3.7"
    arch: str  # "x86_64" | "aarch64"
    glibc: str  # "2.27"

    @property
    def py(self) -> tuple[int, int]:
        a, b = self.python.split(".")[:2]
        return int(a), int(b)

    @property
    def abi(self) -> str:
        major, minor = self.py
        return f"cp{major}{minor}" + ("m" if (major, minor) < (3, 8) else "")

    @property
    def glibc_tuple(self) -> tuple[int, int]:
        a, b = self.glibc.split(".")[:2]
        return int(a), int(b)

    def platforms(self) -> list[str]:
        """Platform tags, most specific first: manylinux_2_<glibc> … manylinux_2_5, legacy aliases, linux."""
        major, minor = self.glibc_tuple
        out = []
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        for m in range(minor, 4, -1):
            out.append(f"manylinux_{major}_{m}_{self.arch}")
            if m in legacy and (self.arch == "x86_64" or m == 17):
                out.append(f"{legacy[m]}_{self.arch}")
        out.append(f"linux_{self.arch}")
        return out

    def tags(self) -> list[Tag]:
        plats = self.platforms()
        return list(cpython_tags(self.py, abis=[self.abi], platforms=plats)) + list(
            compatible_tags(self.py, interpreter=f"cp{self.py[0]}{self.py[1]}", platforms=plats)
        )

    def uv_platform(self) -> str:
        glibc = self.glibc_tuple
        level = max((lv for lv in UV_MANYLINUX if lv <= glibc), default=(2, 17))
        return f"{self.arch}-manylinux_{level[0]}_{level[1]}"


def scheme_for(site_packages: str, scripts: str, python_version: str) -> dict[str, str]:
    prefix = str(Path(site_packages).parent.parent.parent)  # /usr/local/lib/pythonX.Y/x → /usr/local
    return {
        "purelib": site_packages,
        "platlib": site_packages,
        "scripts": scripts,
        "headers": f"{prefix}/include/python{python_version}",
        "data": prefix,
    }
