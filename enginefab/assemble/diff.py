"""`enginefab diff A B`: which inputs, layers and files differ between two images — the tool
that explains a non-reproducible build.

A side is an OCI layout (``DIR`` or ``DIR:REF``, optionally prefixed ``oci:``), a definition
file (``build/x.json``), or an image alias (its ``build/<alias>.json``). A definition's layers
are looked up in the store's action cache (so a built definition compares file by file; an
unbuilt one by inputs only); a layout's layers are named from its config history.

Layers are paired by id (the planner's ids are content-derived: the same inputs give the same
id), then by the id's stem (``wheels/numpy-…``), then by position. For each differing pair whose
blobs are at hand, the tars are compared entry by entry: type, mode, owner, size, content
sha256, link target — and, if the files agree, the header fields and entry order that make the
tars differ anyway; identical tars with different blobs point at compression.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from enginefab.assemble import explain, rootfs
from enginefab.assemble.archives import BoundedTarInfo
from enginefab.assemble.image import REF_NAME
from enginefab.assemble.keys import chain_keys, is_layer_media
from enginefab.assemble.store import Store
from enginefab.core.definition import Definition, load_definition
from enginefab.core.errors import BuildError
from enginefab.core.paths import definition_path
from enginefab.engines.matrix import load

_CREATED_BY = re.compile(r"^enginefab \S+: (\w+) (.+)$")


@dataclass
class LayerRef:
    id: str
    digest: str | None  # None: not built (definition side)
    diff_id: str | None = None
    media_type: str = ""
    size: int | None = None
    blob: Path | None = None
    #: why the layer's bytes differ between builds, as its definition (or history) declares
    unreproducible: str | None = None

    @property
    def stem(self) -> str:
        return re.sub(r"-[0-9a-f]{8}$", "", self.id)

    def as_dict(self) -> dict:
        return {"id": self.id, "digest": self.digest, "diff_id": self.diff_id, "size": self.size}


@dataclass
class Side:
    label: str
    defn: Definition | None = None
    manifest: str | None = None
    config: dict | None = None
    layers: list[LayerRef] = field(default_factory=list)


# -- opening a side ----------------------------------------------------------------------------


def _layout_and_ref(spec: str) -> tuple[Path, str | None] | None:
    s = spec[4:] if spec.startswith("oci:") else spec
    if (Path(s) / "oci-layout").is_file():
        return Path(s), None
    d, _, ref = s.rpartition(":")
    if d and (Path(d) / "oci-layout").is_file():
        return Path(d), ref
    return None


def open_side(spec: str, store: Store, project: Path, hint: str | None = None) -> Side:
    lay = _layout_and_ref(spec)
    if lay is not None:
        return _layout_side(spec, *lay, store, hint)
    p = Path(spec)
    if not (spec.endswith(".json") and p.is_file()):
        p = definition_path(project, spec)
        if not p.is_file():
            try:
                p = definition_path(project, load(project).get(spec).alias)
            except Exception:
                raise BuildError(f"{spec!r} is neither an OCI layout, a definition file nor an image of the matrix",
                                 fix="give DIR[:REF] of a layout, a build/*.json file, or an image alias") from None
    return _definition_side(spec, load_definition(p), store)


def _definition_side(label: str, defn: Definition, store: Store) -> Side:
    side = Side(label=label, defn=defn)
    for layer, key in zip(defn.layers, chain_keys(defn)):
        if layer.kind == "base":
            for i in layer.inputs:
                if is_layer_media(i.media_type):
                    d = "sha256:" + (i.sha256 or "")
                    side.layers.append(LayerRef(f"base {i.name}", d, i.diff_id, i.media_type or "", i.size,
                                                store.blob_path(d) if store.has(d) else None))
            continue
        hit = store.action_get(key)
        if hit is None:
            side.layers.append(LayerRef(layer.id, None, unreproducible=layer.unreproducible))
        else:
            side.layers.append(LayerRef(layer.id, hit["digest"], hit["diff_id"], hit["media_type"], hit["size"],
                                        store.blob_path(hit["digest"]), layer.unreproducible))
    return side


def _layout_side(label: str, layout: Path, ref: str | None, store: Store, hint: str | None) -> Side:
    index = json.loads((layout / "index.json").read_bytes())
    manifests = index.get("manifests", [])
    refs = {m.get("annotations", {}).get(REF_NAME): m for m in manifests}
    if ref is None and hint in refs:
        ref = hint
    if ref is not None:
        if ref not in refs:
            raise BuildError(f"{layout} has no image {ref!r} (it has: {', '.join(sorted(r for r in refs if r))})")
        desc = refs[ref]
    elif len({m["digest"] for m in manifests}) == 1:
        desc = manifests[0]
    else:
        raise BuildError(f"{layout} holds several images: say which, as {layout}:REF",
                         fix=f"REF is one of: {', '.join(sorted(r for r in refs if r))}")

    def blob(d: str) -> Path:
        p = layout / "blobs" / "sha256" / d.split(":", 1)[1]
        return p if p.is_file() else store.blob_path(d)

    manifest = json.loads(blob(desc["digest"]).read_bytes())
    config = json.loads(blob(manifest["config"]["digest"]).read_bytes())
    history = [h for h in config.get("history", []) if not h.get("empty_layer")]
    diff_ids = config.get("rootfs", {}).get("diff_ids", [])
    side = Side(label=label, manifest=desc["digest"], config=config)
    for n, ld in enumerate(manifest["layers"]):
        made = history[n].get("created_by", "") if len(history) == len(manifest["layers"]) else ""
        m = _CREATED_BY.match(made)
        lid = m.group(2) if m else (made.replace("base: ", "base ") if made.startswith("base: ") else f"layer {n}")
        p = blob(ld["digest"])
        note = history[n].get("comment", "").partition(f"({explain.DECLARED} ")[2].rstrip(")") if m else ""
        side.layers.append(LayerRef(lid, ld["digest"], diff_ids[n] if n < len(diff_ids) else None, ld["mediaType"],
                                    ld["size"], p if p.is_file() else None, note or None))
    return side


# -- comparing ---------------------------------------------------------------------------------


def diff_inputs(a: Definition, b: Definition) -> dict:
    def index(d: Definition) -> dict[tuple[str, str], dict]:
        return {(i.kind, i.name): {"version": i.version, "sha256": i.sha256, "size": i.size} for i in d.inputs()}

    ia, ib = index(a), index(b)
    out: dict = {"changed": [], "added": [], "removed": []}
    for k in sorted(ia.keys() | ib.keys()):
        name = f"{k[0]}:{k[1]}"
        if k not in ib:
            out["removed"].append({"input": name, **ia[k]})
        elif k not in ia:
            out["added"].append({"input": name, **ib[k]})
        elif ia[k] != ib[k]:
            out["changed"].append({"input": name, "a": ia[k], "b": ib[k]})
    settings = {}
    for fld in ("compression", "source_date_epoch", "config", "image", "python", "base"):
        va, vb = getattr(a, fld), getattr(b, fld)
        va = va.model_dump(mode="json") if hasattr(va, "model_dump") else va
        vb = vb.model_dump(mode="json") if hasattr(vb, "model_dump") else vb
        if va != vb:
            settings[fld] = {"a": va, "b": vb}
    out["settings"] = settings
    return out


def pair_layers(a: list[LayerRef], b: list[LayerRef]) -> list[tuple[LayerRef | None, LayerRef | None]]:
    left, right = list(a), list(b)
    pairs: list[tuple[int, LayerRef | None, LayerRef | None]] = []
    for key in (lambda x: x.id, lambda x: x.stem):
        for i, la in enumerate(left):
            if la is None:
                continue
            for j, lb in enumerate(right):
                if lb is not None and key(la) == key(lb):
                    pairs.append((i, la, lb))
                    left[i] = right[j] = None  # type: ignore[call-overload]
                    break
    rest_a = [(i, x) for i, x in enumerate(left) if x is not None]
    rest_b = [x for x in right if x is not None]
    for (i, la), lb in zip(rest_a, rest_b):
        pairs.append((i, la, lb))
    pairs += [(i, la, None) for i, la in rest_a[len(rest_b):]]
    pairs.sort(key=lambda p: p[0])
    out: list[tuple[LayerRef | None, LayerRef | None]] = [(la, lb) for _, la, lb in pairs]
    out += [(None, lb) for lb in rest_b[len(rest_a):]]
    return out


@dataclass(frozen=True)
class FileInfo:
    type: str
    mode: int
    uid: int
    gid: int
    size: int
    sha256: str
    link: str
    mtime: int
    uname: str
    gname: str

    def as_dict(self) -> dict:
        return {"type": self.type, "mode": oct(self.mode), "uid": self.uid, "gid": self.gid, "size": self.size,
                "sha256": self.sha256, "link": self.link}


_TYPES = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink",
          tarfile.LNKTYPE: "hardlink", tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo"}


def read_layer(blob: Path, media_type: str) -> tuple[dict[str, FileInfo], list[str]]:
    """path → FileInfo, and the entry order, of a layer blob."""
    files: dict[str, FileInfo] = {}
    order: list[str] = []
    with rootfs.open_layer(blob, media_type) as f, tarfile.open(fileobj=f, mode="r|", tarinfo=BoundedTarInfo) as tf:
        for m in tf:
            name = m.name.rstrip("/")
            h = ""
            if m.isreg():
                d = hashlib.sha256()
                src = tf.extractfile(m)
                while chunk := src.read(1 << 20):  # type: ignore[union-attr]
                    d.update(chunk)
                h = d.hexdigest()
            files[name] = FileInfo(_TYPES.get(m.type, repr(m.type)), m.mode, m.uid, m.gid, m.size if m.isreg() else 0,
                                   h, m.linkname, int(m.mtime), m.uname, m.gname)
            order.append(name)
    return files, order


def diff_files(a: LayerRef, b: LayerRef, *, limit: int | None = 200) -> dict:
    fa, oa = read_layer(a.blob, a.media_type)  # type: ignore[arg-type]
    fb, ob = read_layer(b.blob, b.media_type)  # type: ignore[arg-type]
    changed, added, removed = [], [], []
    for p in sorted(fa.keys() | fb.keys()):
        if p not in fb:
            removed.append({"path": p, **fa[p].as_dict()})
        elif p not in fa:
            added.append({"path": p, **fb[p].as_dict()})
        else:
            da, db = fa[p].as_dict(), fb[p].as_dict()
            fields = [k for k in da if da[k] != db[k]]
            if fields:
                changed.append({"path": p, "fields": fields, "a": {k: da[k] for k in fields},
                                "b": {k: db[k] for k in fields}})
    content = [c["path"] for c in changed if "sha256" in c["fields"]]
    if content:  # where the contents differ: ELF sections, a .pyc header, the first byte
        whys = explain.explain(a.blob, a.media_type, b.blob, b.media_type, content)
        for c in changed:
            if c["path"] in whys:
                c["why"] = whys[c["path"]]
    out: dict = {"changed": changed[:limit], "added": added[:limit], "removed": removed[:limit],
                 "counts": {"changed": len(changed), "added": len(added), "removed": len(removed)}}
    if not (changed or added or removed):
        headers = sorted({k for p in fa for k in ("mtime", "uname", "gname")
                          if getattr(fa[p], k) != getattr(fb[p], k)})
        why = []
        if headers:
            why.append(f"the tar headers differ in {', '.join(headers)}")
        if oa != ob:
            why.append("the entries are in a different order")
        if a.diff_id and a.diff_id == b.diff_id:
            why = ["the tars are identical: the compressed bytes differ (compression contract or implementation)"]
        out["explanation"] = "; ".join(why) or "same entries and metadata: the tars differ in padding or PAX records"
    return out


def diff(a: Side, b: Side, *, files: bool = True, limit: int | None = 200) -> dict:
    out: dict = {"a": a.label, "b": b.label, "manifest": {"a": a.manifest, "b": b.manifest}}
    if a.defn is not None and b.defn is not None:
        out["inputs"] = diff_inputs(a.defn, b.defn)
    rows = []
    for la, lb in pair_layers(a.layers, b.layers):
        row: dict = {"a": la.as_dict() if la else None, "b": lb.as_dict() if lb else None}
        if la is None or lb is None:
            row["status"] = "only in a" if lb is None else "only in b"
        elif la.digest is None or lb.digest is None:
            row["status"] = "not built" if la.id != lb.id else "same inputs, not built"
        elif la.digest == lb.digest:
            row["status"] = "same"
        else:
            row["status"] = "differs"
            declared = la.unreproducible or lb.unreproducible
            if declared:
                row["unreproducible"] = declared
            if files and la.blob is not None and lb.blob is not None:
                row["files"] = diff_files(la, lb, limit=limit)
            elif files:
                row["files"] = None  # blobs not at hand
        rows.append(row)
    out["layers"] = rows
    if a.config is not None and b.config is not None:
        ca, cb = a.config.get("config", {}), b.config.get("config", {})
        out["config"] = {k: {"a": ca.get(k), "b": cb.get(k)} for k in sorted(ca.keys() | cb.keys())
                         if ca.get(k) != cb.get(k)}
    out["identical"] = bool(a.manifest and a.manifest == b.manifest) or (
        all(r["status"] == "same" for r in rows) and not out.get("config")
        and not any(out.get("inputs", {}).get(k) for k in ("changed", "added", "removed", "settings")))
    return out


def render(d: dict) -> list[str]:
    """The diff as lines for a terminal."""
    lines = [f"a: {d['a']}  {d['manifest']['a'] or ''}", f"b: {d['b']}  {d['manifest']['b'] or ''}"]
    if d["identical"]:
        return lines + ["identical"]
    inp = d.get("inputs")
    if inp:
        for c in inp["changed"]:
            lines.append(f"input ~ {c['input']} {c['a']['version']} → {c['b']['version']}"
                         + ("" if c["a"]["version"] != c["b"]["version"] else
                            f" (sha256 {str(c['a']['sha256'])[:12]} → {str(c['b']['sha256'])[:12]})"))
        lines += [f"input + {c['input']} {c['version']}" for c in inp["added"]]
        lines += [f"input - {c['input']} {c['version']}" for c in inp["removed"]]
        lines += [f"setting ~ {k}" for k in inp["settings"]]
    for r in d["layers"]:
        a, b = r["a"], r["b"]
        name = a["id"] if a and (not b or a["id"] == b["id"]) else f"{a['id'] if a else '∅'} → {b['id'] if b else '∅'}"
        mark = {"same": "=", "differs": "≠"}.get(r["status"], "?")
        lines.append(f"layer {mark} {name}" + ("" if r["status"] in ("same", "differs") else f"  ({r['status']})"))
        fd = r.get("files")
        if r.get("unreproducible"):
            lines.append(f"      declared {explain.DECLARED} {r['unreproducible']}")
        if r["status"] == "differs" and fd is None and "files" in r:
            lines.append("      (blobs not at hand: build both sides into one store to compare files)")
        if fd:
            for c in fd["changed"]:
                lines.append(f"      ~ {c['path']}: " + ", ".join(f"{k} {c['a'][k]} → {c['b'][k]}" for k in c["fields"]))
                if "why" in c:
                    lines.append(f"          {c['why']}")
            lines += [f"      + {c['path']} ({c['type']}, {c['size']} B)" for c in fd["added"]]
            lines += [f"      - {c['path']} ({c['type']}, {c['size']} B)" for c in fd["removed"]]
            shown = len(fd["changed"]) + len(fd["added"]) + len(fd["removed"])
            total = sum(fd["counts"].values())
            if total > shown:
                lines.append(f"      … {total - shown} more (--json for all)")
            if "explanation" in fd:
                lines.append(f"      {fd['explanation']}")
    for k, v in (d.get("config") or {}).items():
        lines.append(f"config ~ {k}: {v['a']} → {v['b']}")
    return lines
