"""Validate what we write against the official OCI JSON schemas (image-spec), and check layouts.

The schemas ship in the package (oci_schemas/, the image-spec's own files, Apache-2.0), so
`validate` works wherever enginefab is installed; the settings' ENGINEFAB_OCI_SCHEMAS point at
another copy (the caller passes the directory). `validate_layout` walks an OCI image layout: the
oci-layout file, index.json, every manifest, index and config it reaches, and every blob's
digest and size.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from enginefab.core.errors import EnginefabError

#: the schemas installed with the package
PACKAGED = Path(__file__).resolve().parent / "oci_schemas"

SCHEMA_OF = {
    "application/vnd.oci.image.manifest.v1+json": "image-manifest-schema.json",
    "application/vnd.oci.image.index.v1+json": "image-index-schema.json",
    "application/vnd.oci.image.config.v1+json": "config-schema.json",
}


def has_schemas(directory: Path) -> bool:
    return (directory / "image-manifest-schema.json").is_file()


@lru_cache(maxsize=4)
def _validator(name: str, directory: str):
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    files = {p.name: json.loads(p.read_text()) for p in Path(directory).glob("*.json")}

    def retrieve(uri: str):
        base = uri.rsplit("/", 1)[-1].split("#")[0]
        if base not in files:
            raise LookupError(uri)
        return Resource.from_contents(files[base], default_specification=DRAFT4)

    reg = Registry(retrieve=retrieve)
    return jsonschema.Draft4Validator(files[name], registry=reg, format_checker=jsonschema.FormatChecker())


def validate(doc: dict, schema_file: str, directory: Path = PACKAGED) -> None:
    """`doc` against the image-spec schema `schema_file` of `directory`."""
    if not has_schemas(directory):
        raise EnginefabError(f"the OCI JSON schemas are not in {directory}",
                             fix="reinstall enginefab (they ship in the package), or set ENGINEFAB_OCI_SCHEMAS "
                             "to a directory with the image-spec schemas")
    import jsonschema

    try:
        _validator(schema_file, str(directory)).validate(doc)
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path)
        raise EnginefabError(f"{schema_file}: {e.message} at /{where}") from None


def validate_layout(layout: Path, directory: Path = PACKAGED) -> int:
    """Validate a whole OCI layout; returns the number of documents checked."""
    if not (layout / "oci-layout").is_file():
        raise EnginefabError(f"{layout} is not an OCI image layout: it has no oci-layout file",
                             input=str(layout), fix="give the directory `enginefab build --out` or `pull --out` wrote")
    lay = _json(layout / "oci-layout")
    validate(lay, "image-layout-schema.json", directory)
    count = 1
    seen: set[str] = set()

    def blob(digest: str, size: int) -> bytes:
        p = layout / "blobs" / "sha256" / digest.split(":", 1)[1]
        if not p.is_file():
            raise EnginefabError(f"blob {digest} is missing from {layout}", input=str(p))
        data = p.read_bytes()
        if len(data) != size or "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise EnginefabError(f"blob {digest} does not match its descriptor")
        return data

    def visit(desc: dict) -> None:
        nonlocal count
        if desc["digest"] in seen:
            return
        seen.add(desc["digest"])
        mt = desc["mediaType"]
        if mt not in SCHEMA_OF:
            p = layout / "blobs" / "sha256" / desc["digest"].split(":", 1)[1]
            if not p.is_file() or p.stat().st_size != desc["size"]:
                raise EnginefabError(f"blob {desc['digest']} is missing or has the wrong size")
            return
        try:
            doc = json.loads(blob(desc["digest"], desc["size"]))
        except ValueError as e:
            raise EnginefabError(f"blob {desc['digest']} ({mt}) is not JSON: {e}", input=str(layout)) from None
        validate(doc, SCHEMA_OF[mt], directory)
        count += 1
        if mt.endswith("index.v1+json"):
            for m in doc["manifests"]:
                visit(m)
        elif mt.endswith("manifest.v1+json"):
            visit(doc["config"])
            for layer in doc["layers"]:
                visit(layer)

    index = _json(layout / "index.json")
    validate(index, "image-index-schema.json", directory)
    count += 1
    for m in index["manifests"]:
        visit(m)
    return count


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise EnginefabError(f"{path} is missing", input=str(path)) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise EnginefabError(f"{path} is not JSON: {e}", input=str(path)) from None
