"""What installed Debian packages provide, for the layers above them (pure)."""

from __future__ import annotations

from enginefab.core.definition import Input


def provided_names(inputs: list[Input]) -> set[str]:
    """Names (real and virtual) the given deb inputs satisfy, for the layers above them."""
    out: set[str] = set()
    for i in inputs:
        out.add(i.name)
        prov = (i.control or {}).get("Provides", "")
        for part in prov.split(","):
            name = part.strip().split(" ")[0].split(":")[0]
            if name:
                out.add(name)
    return out
