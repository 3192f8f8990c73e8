"""One document describing a release (or a set of built images), from which the notes and the
page are rendered: per image its digest, size, layers (with which other images share each), tags,
referrers, check results by level, and the pins changed since a previous lock (`enginefab diff`'s
machinery, `assemble/churn.py`). Pure: the caller gathers the inputs, nothing here reads a disk or
a registry, and the same inputs give the same document byte for byte.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from enginefab.assemble.churn import compare
from enginefab.assemble.image import Built
from enginefab.check.report import LEVELS
from enginefab.core.definition import Definition
from enginefab.assemble.keys import is_layer_media

KINDS = {"application/spdx+json": "SBOM", "application/vnd.in-toto+json": "provenance",
         "application/vnd.enginefab.check.report.v1+json": "check report"}


@dataclass(frozen=True)
class Subject:
    """What is known of one image: its definition and build, its check report (the JSON
    `enginefab check` writes) and, once planned for a registry, its published form (a record entry)."""

    defn: Definition
    built: Built
    report: dict | None = None
    published: dict | None = None


def layer_rows(defn: Definition, manifest: bytes) -> list[dict]:
    """Each layer of the manifest with the definition layer it comes from (a base gives several)."""
    ids = []
    for layer in defn.layers:
        if layer.kind == "base":
            n = sum(1 for i in layer.inputs if is_layer_media(i.media_type))
            ids += [(f"{layer.id} ({k + 1}/{n})", "base") for k in range(n)]
        else:
            ids.append((layer.id, layer.kind))
    descs = json.loads(manifest)["layers"]
    if len(ids) != len(descs):  # a definition that does not explain its manifest: number them
        ids = [(f"layer {k + 1}", "?") for k in range(len(descs))]
    return [{"id": i, "kind": k, "digest": d["digest"], "size": d["size"]} for (i, k), d in zip(ids, descs)]


def checks_by_level(report: dict | None) -> dict[str, dict]:
    """level → counts of pass/fail/skip/error and the names of what did not pass."""
    out: dict[str, dict] = {}
    for r in (report or {}).get("results", []):
        lv = out.setdefault(r["level"], {"pass": 0, "fail": 0, "skip": 0, "error": 0, "failed": []})
        lv[r["status"]] += 1
        if r["status"] in ("fail", "error"):
            lv["failed"].append(f"{r['name']}: {r.get('detail', '')}".strip(": "))
    return {k: out[k] for k in sorted(out, key=lambda lv: LEVELS.index(lv) if lv in LEVELS else len(LEVELS))}


def referrer_url(registry: str, plain_http: bool, repository: str, digest: str) -> str:
    return f"{'http' if plain_http else 'https'}://{registry}/v2/{repository}/manifests/{digest}"


def _image(s: Subject, changes: dict | None, registry: str | None, plain_http: bool) -> dict:
    doc = json.loads(s.built.manifest)
    layers = layer_rows(s.defn, s.built.manifest)
    pub = s.published or {}
    levels = checks_by_level(s.report)
    refs = [{"kind": KINDS.get(d.get("artifactType", ""), d.get("artifactType", "")), "digest": d["digest"],
             "url": referrer_url(registry, plain_http, pub["repository"], d["digest"]) if registry else None}
            for d in pub.get("referrers", [])]
    return {
        "alias": s.defn.image.alias, "name": s.defn.image.name,
        "platform": f"{s.built.platform.get('os', 'linux')}/{s.built.platform.get('architecture', '?')}",
        "digest": s.built.digest,
        "size": len(s.built.manifest) + doc["config"]["size"] + sum(la["size"] for la in layers),
        "layers": layers, "checks": levels,
        "status": "unchecked" if s.report is None else ("pass" if all(
            not (lv["fail"] or lv["error"]) for lv in levels.values()) else "fail"),
        "tags": pub.get("tags", []), "reference": pub.get("reference"), "referrers": refs,
        "changes": changes,
    }


def pin_changes(old: dict[str, Definition] | None, new: list[Definition]) -> dict[str, dict] | None:
    """alias → {status, why, pins} against the previous lock (None: there is none), restricted to
    the images released now."""
    if old is None:
        return None
    mine = {d.image.alias: d for d in new}
    diff = compare({a: d for a, d in old.items() if a in mine}, mine)
    return {row["alias"]: {"status": row["status"], "digest_changes": row["digest_changes"], "why": row["why"],
                           "pins": row.get("inputs", []), "settings": row.get("settings", [])}
            for row in diff["images"] if row["alias"] in mine}


def document(subjects: list[Subject], *, title: str, lock: str, since: str | None,
             old: dict[str, Definition] | None, registry: str | None = None, plain_http: bool = False,
             indexes: list[dict] | None = None, release_tag: str | None = None) -> dict:
    """The release document. `since`: how the previous lock is named (its digest), None when
    there is none; `old`: its definitions."""
    changes = pin_changes(old, [s.defn for s in subjects]) if old is not None else None
    images = [_image(s, changes.get(s.defn.image.alias) if changes else None, registry, plain_http)
              for s in subjects]
    users: dict[str, list[str]] = {}
    for img in images:
        for la in img["layers"]:
            users.setdefault(la["digest"], []).append(img["alias"])
    for img in images:
        for la in img["layers"]:
            la["shared_with"] = [a for a in users[la["digest"]] if a != img["alias"]]
    unique = {la["digest"]: la["size"] for img in images for la in img["layers"]}
    return {"title": title, "lock": lock, "since": since, "registry": registry, "tag": release_tag,
            "images": images, "indexes": indexes or [],
            "totals": {"images": len(images), "layers": sum(len(i["layers"]) for i in images),
                       "unique_layers": len(unique), "sum_of_images": sum(i["size"] for i in images),
                       "unique_bytes": sum(unique.values())}}
