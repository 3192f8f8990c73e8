"""Churn between two locks: per image, whether its digest changes, which layers come and go, and
why — `enginefab diff OLD NEW` where both sides are sets of definitions (a checkout, its build/
directory, or ``@REV``: build/ at a git revision of this checkout).

An image's digest is a function of its definition: the config and the chain of layer keys
(`keys.chain_keys`: every input with its sha256, the install scheme, the compression contract,
SOURCE_DATE_EPOCH, and for a run step the layers below it). So the lock alone says which digests
change, before anything is built; where the store has built a layer, its blob digest is shown too.

Every layer that appears is explained: an input of it changed version, was added or removed, it
is installed for another Python, a layer below a run step changed, the compression contract
changed — or, the case that should never happen to an image nobody edited, *regrouped*: its
inputs are all unchanged and only the planner put them in other layers.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from enginefab.assemble.keys import chain_keys
from enginefab.assemble.store import Store
from enginefab.core.definition import Definition, Input, Layer, load_definition
from enginefab.core.errors import BuildError
from enginefab.lock.layering import identity

# -- reading a lock ------------------------------------------------------------------------------


def is_lock_set(spec: str) -> bool:
    """``@REV``, or a directory that is not an OCI layout (a checkout or a build/ directory)."""
    return spec.startswith("@") or (Path(spec).is_dir() and not (Path(spec) / "oci-layout").is_file())


def read_lock(spec: str, project: Path) -> dict[str, Definition]:
    """alias → definition of every build/*.json of `spec`."""
    if spec.startswith("@"):
        return _read_git(spec[1:], project)
    d = Path(spec)
    files = sorted((d / "build").glob("*.json")) if (d / "build").is_dir() else sorted(d.glob("*.json"))
    if not files:
        raise BuildError(f"{spec} holds no definitions (no build/*.json, no *.json)",
                         fix="give a checkout, its build/ directory, or @REV for a git revision of this checkout")
    return {f.stem: load_definition(f) for f in files}


def _read_git(rev: str, project: Path) -> dict[str, Definition]:
    def git(*args: str) -> bytes:
        p = subprocess.run(["git", "-C", str(project), *args], capture_output=True)
        if p.returncode != 0:
            raise BuildError(f"git {' '.join(args)}: {p.stderr.decode(errors='replace').strip()}",
                             fix="give a revision of this checkout (a commit, branch or tag) as @REV")
        return p.stdout

    if not rev or rev.startswith("-"):  # never an option to git (`@--output=/tmp/x`)
        raise BuildError(f"@{rev}: not a revision", fix="give a commit, branch or tag of this checkout as @REV")
    # the revision resolved to a commit id first, so nothing in it reaches git as an option or a path
    commit = git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}").decode().strip()
    names = [n for n in git("ls-tree", "-z", "--name-only", f"{commit}:build").decode().split("\0") if n.endswith(".json")]
    return {n[:-5]: Definition.model_validate_json(git("show", f"{commit}:build/{n}")) for n in names}


# -- comparing -------------------------------------------------------------------------------------


def _digest_basis(defn: Definition, keys: list[str]) -> dict:
    """What the image's manifest digest is a function of (config, platform, layer keys)."""
    return {"keys": keys, "config": defn.config.model_dump(mode="json"), "platform": defn.image.platform,
            "source_date_epoch": defn.source_date_epoch}


def _by_name(defn: Definition) -> dict[tuple[str, str], Input]:
    """(kind, name) → input; a run step's build-only tools as kind "<kind> tool", named "<name> (tool)"."""
    return {(i.kind, i.name): i for i in defn.inputs()} | {(f"{i.kind} tool", f"{i.name} (tool)"): i
                                                           for i in defn.tools()}


def _input_changes(old: Definition, new: Definition) -> list[str]:
    a, b = _by_name(old), _by_name(new)
    out = []
    for k in sorted(a.keys() | b.keys()):
        if k not in b:
            out.append(f"-{k[1]} {a[k].version}")
        elif k not in a:
            out.append(f"+{k[1]} {b[k].version}")
        elif a[k].sha256 != b[k].sha256 or a[k].model_dump() != b[k].model_dump():
            va, vb = a[k].version, b[k].version
            out.append(f"{k[1]} {va} → {vb}" if va != vb else f"{k[1]} {va} (other file)")
    return out


def _setting_changes(old: Definition, new: Definition) -> list[str]:
    out = []
    for fld in ("compression", "source_date_epoch", "config", "python", "base"):
        va, vb = getattr(old, fld), getattr(new, fld)
        if (va.model_dump() if hasattr(va, "model_dump") else va) != (vb.model_dump() if hasattr(vb, "model_dump") else vb):
            out.append(fld)
    if [f for la in old.layers for f in la.files] != [f for la in new.layers for f in la.files]:
        out.append("config files")
    return out


def _why(layer: Layer, old: Definition, new: Definition, old_layers: list[Layer], settings: list[str]) -> str:
    """Why `layer` of `new` is not a layer of `old`."""
    a, b = _by_name(old), _by_name(new)
    reasons = []
    mine = [((i.kind, i.name), i) for i in layer.inputs]
    mine += [((f"{i.kind} tool", f"{i.name} (tool)"), i) for i in layer.tools or []]
    for k, i in mine:
        o = a.get(k)
        if o is None:
            reasons.append(f"+{k[1]} {i.version}")
        elif o.model_dump() != i.model_dump():
            reasons.append(f"{k[1]} {o.version} → {i.version}" if o.version != i.version else f"{k[1]} (other file)")
    shas = {i.sha256 for i in layer.inputs}
    for o_layer in old_layers:
        if any(i.sha256 in shas for i in o_layer.inputs):
            reasons += [f"-{i.name} {i.version}" for i in o_layer.inputs if (i.kind, i.name) not in b]
    if reasons:
        return ", ".join(dict.fromkeys(reasons))
    same_inputs = [o for o in old.layers if o.inputs and {i.sha256 for i in o.inputs} == shas]
    if layer.kind == "run" and identity(layer) in {identity(o) for o in old.layers}:
        return "rebuilt: a layer below this run step changed"
    if any(o.scheme != layer.scheme or o.interpreter != layer.interpreter for o in same_inputs):
        return "installed for another Python (install scheme or interpreter)"
    if {"compression", "source_date_epoch"} & set(settings):
        return "compression contract or SOURCE_DATE_EPOCH changed"
    if layer.kind == "files" and "config files" in settings:
        return "its files changed"
    return "regrouped: its inputs did not change, the planner put them in other layers"


def _ref(layer: Layer, key: str, store: Store | None, why: str | None = None) -> dict:
    hit = store.action_get(key) if store is not None and layer.kind != "base" else None
    out = {"id": layer.id, "kind": layer.kind, "key": key, "digest": hit["digest"] if hit else None}
    if why is not None:
        out["why"] = why
    return out


def compare_image(old: Definition, new: Definition, store: Store | None = None) -> dict:
    ko, kn = chain_keys(old), chain_keys(new)
    inputs, settings = _input_changes(old, new), _setting_changes(old, new)
    digest_changes = _digest_basis(old, ko) != _digest_basis(new, kn)
    gone = [(la, k) for la, k in zip(old.layers, ko) if k not in set(kn)]
    added = [(la, k) for la, k in zip(new.layers, kn) if k not in set(ko)]
    row = {
        "alias": new.image.alias,
        "status": "unchanged" if old.to_json() == new.to_json() else "changed",
        "digest_changes": digest_changes,
        "own_inputs_changed": bool(inputs or settings),
        "inputs": inputs,
        "settings": settings,
        "layers": {
            "kept": sum(k in set(ko) for k in kn),
            "removed": [_ref(la, k, store) for la, k in gone],
            "added": [_ref(la, k, store, _why(la, old, new, [g for g, _ in gone], settings)) for la, k in added],
        },
    }
    if row["status"] == "unchanged":
        row["why"] = "unchanged"
    elif not digest_changes:
        row["why"] = "same digest (only what the image does not carry changed: checks, matrix entry)"
    elif inputs:
        more = f" … ({len(inputs)} in all)" if len(inputs) > 6 else ""
        row["why"] = "its inputs changed: " + ", ".join(inputs[:6]) + more
    elif settings:
        row["why"] = "its definition changed: " + ", ".join(settings)
    else:
        row["why"] = "re-planned only: its inputs did not change"
    row["churn"] = digest_changes and not row["own_inputs_changed"]
    return row


def compare(old: dict[str, Definition], new: dict[str, Definition], store: Store | None = None,
            labels: tuple[str, str] = ("a", "b")) -> dict:
    images = []
    for alias in sorted(old.keys() | new.keys()):
        if alias not in old:
            d = new[alias]
            images.append({"alias": alias, "status": "added", "digest_changes": True, "churn": False,
                           "why": f"new image ({len(d.layers)} layers)",
                           "layers": {"kept": 0, "removed": [],
                                      "added": [_ref(la, k, store) for la, k in zip(d.layers, chain_keys(d))]}})
        elif alias not in new:
            images.append({"alias": alias, "status": "removed", "digest_changes": True, "churn": False,
                           "why": "image removed", "layers": {"kept": 0, "removed": [], "added": []}})
        else:
            images.append(compare_image(old[alias], new[alias], store))
    count = lambda f: sum(1 for i in images if f(i))  # noqa: E731
    totals = {
        "images": len(images),
        "added": count(lambda i: i["status"] == "added"),
        "removed": count(lambda i: i["status"] == "removed"),
        "digests_change": count(lambda i: i["status"] == "changed" and i["digest_changes"]),
        "churn": count(lambda i: i["churn"]),
        "same_digest": count(lambda i: not i["digest_changes"]),
    }
    return {"a": labels[0], "b": labels[1], "images": images, "totals": totals,
            "identical": all(i["status"] == "unchanged" for i in images)}


def render(d: dict) -> list[str]:
    lines = [f"a: {d['a']}", f"b: {d['b']}"]
    marks = {"added": "+", "removed": "-"}
    for img in d["images"]:
        mark = marks.get(img["status"]) or ("≠" if img["digest_changes"] else "=")
        lines.append(f"{mark} {img['alias']}: {img['why']}" + ("  [churn]" if img["churn"] else ""))
        if img["status"] != "changed":
            continue
        for la in img["layers"]["removed"]:
            lines.append(f"    - {la['id']}  key {la['key'][:12]}" + (f"  {la['digest'][:19]}" if la["digest"] else ""))
        for la in img["layers"]["added"]:
            lines.append(f"    + {la['id']}  key {la['key'][:12]}" + (f"  {la['digest'][:19]}" if la["digest"] else "")
                         + f"  ({la['why']})")
    t = d["totals"]
    lines.append(f"{t['images']} images: {t['added']} added, {t['removed']} removed, {t['digests_change']} change digest "
                 f"({t['churn']} without a change of their own inputs), {t['same_digest']} keep their digest")
    return lines
