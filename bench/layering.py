"""Layer churn and sharing: the planner against today's (bench/_reference_planner.py), same run.

A growth sequence adds images one at a time: the committed matrix (build/*.json, in name order),
then the variants of bench/data/layering-variants.toml (other Python versions, extra
requirements, other engine versions), locked for real into bench/data/layering-variants.json
(`python -m bench.layering --relock`; PyPI and the Debian archive). After every step both
planners plan the whole matrix, as `enginefab lock` does, and per step we report:

* churn: the images already in the matrix whose digest changed although their own inputs did
  not (goal: none; an image's digest is a function of its layers' action-cache keys);
* unique bytes over the sum of image sizes (what a registry stores against what the images
  would weigh unshared; goal: within 2 points of today's planner);
* layers per image (OCI layers: a base counts with all its blobs; the budget is 40);
* plan time of the whole matrix, and of a 200-image matrix made from the same real wheels.

Sizes are the inputs' sizes (wheels and debs are compressed already), as `enginefab plan`
estimates an unbuilt layer. `python -m bench.layering --sweep` prints the design sweep of
docs/layering.md (group size and the singleton threshold). Nothing here gates CI.
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import sys
import tempfile
import time
import tomllib
from dataclasses import fields, replace
from pathlib import Path
from types import SimpleNamespace

from bench import _reference_planner as reference_planner
from enginefab.assemble.keys import base_keys, is_layer_media, layer_key
from enginefab.core import canonical
from enginefab.core.definition import FileEntry, Input, Layer, load_definition
from enginefab.lock import layering

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
VARIANTS_TOML = DATA / "layering-variants.toml"
VARIANTS_JSON = DATA / "layering-variants.json"
SCALE = 200

# -- the images ---------------------------------------------------------------------------------


def _parts_json(p: layering.Parts) -> dict:
    out: dict = {}
    for f in fields(p):
        v = getattr(p, f.name)
        if isinstance(v, list):
            out[f.name] = [_dump(x) for x in v]
        else:
            out[f.name] = v
    return out


def _dump(x: Input | FileEntry) -> dict:
    d = x.model_dump(mode="json", exclude_none=True)
    if isinstance(x, Input):
        d.setdefault("url", None)
        d.setdefault("sha256", None)
    return d


def _parts_of(d: dict) -> layering.Parts:
    kw = dict(d)
    for f in fields(layering.Parts):
        if isinstance(kw.get(f.name), list):
            model = FileEntry if f.name == "config" else Input
            kw[f.name] = [model.model_validate(x) for x in kw[f.name]]
    return layering.Parts(**kw)


def relock() -> None:
    """Lock every variant for real (network) in a scratch copy of engines/ and keep what the
    planners are given: each image's resolved inputs (Parts), Debian control fields left out."""
    from enginefab.engines.matrix import load
    from enginefab.lock.locker import resolve

    spec = tomllib.loads(VARIANTS_TOML.read_text())
    with tempfile.TemporaryDirectory(prefix="enginefab-variants-") as td:
        proj = Path(td)
        shutil.copytree(ROOT / "engines", proj / "engines")
        (proj / "build").mkdir()
        for family, rel in spec["releases"].items():
            f = proj / "engines" / f"{family}.toml"
            f.write_text(f.read_text() + "\n" + rel["text"])
        for img in spec["image"]:
            img = dict(img)
            f = proj / "engines" / f"{img.pop('family')}.toml"
            lines = ["", "[[image]]"] + [f"{k} = {json.dumps(v)}" for k, v in img.items()]
            f.write_text(f.read_text() + "\n".join(lines) + "\n")
        m = load(proj)
        out = []
        for v in spec["image"]:
            parts = resolve(m.get(v["alias"]), m, say=lambda s: print(s, file=sys.stderr)).parts
            for slot in ("os", "python", "debs"):
                setattr(parts, slot, [i.model_copy(update={"control": None}) for i in getattr(parts, slot)])
            out.append({"edit": _edit_kind(v["alias"]), "parts": _parts_json(parts)})
    _write_variants(out)
    print(f"wrote {VARIANTS_JSON.relative_to(ROOT)} ({len(out)} images)", file=sys.stderr)


#: platform parts, the same for every variant on one OS, Python and arch: stored once
_SHARED = ("base", "os", "python", "stack", "debs")


def _write_variants(images: list[dict]) -> None:
    lists: dict[str, list] = {}
    for v in images:
        for slot in _SHARED:
            if v["parts"].get(slot):
                key = canonical.key_of(v["parts"][slot])[:16]
                lists[key] = v["parts"][slot]
                v["parts"][slot] = {"same_as": key}
    VARIANTS_JSON.write_text(json.dumps({"lists": lists, "images": images}, indent=0, sort_keys=True) + "\n")


def _edit_kind(alias: str) -> str:
    if "py3." in alias or "tf2." in alias:
        return "other Python"
    if any(x in alias for x in ("-vision", "-sklearn", "-transformers")):
        return "extra requirements"
    return "other engine version"


def committed() -> list[layering.Parts]:
    return [layering.parts_of(load_definition(p)) for p in sorted((ROOT / "build").glob("*.json"))]


def variants() -> list[tuple[str, layering.Parts]]:
    data = json.loads(VARIANTS_JSON.read_text())
    out = []
    for v in data["images"]:
        parts = {k: data["lists"][x["same_as"]] if k in _SHARED and isinstance(x, dict) else x
                 for k, x in v["parts"].items()}
        out.append((v["edit"], _parts_of(parts)))
    return out


def scaled(images: list[layering.Parts], n: int = SCALE, seed: int = 14) -> list[layering.Parts]:
    """`n` images from the real ones: copies with one edit each, made of real locked wheels — one
    wheel dropped, or one wheel swapped for another locked version of it for the same scheme."""
    rng = random.Random(seed)
    pool: dict[tuple, list[Input]] = {}
    for p in images:
        for w in p.wheels:
            pool.setdefault((p.interpreter, w.name), []).append(w)
    out = list(images)
    while len(out) < n:
        p = rng.choice(images)
        ws = list(p.wheels)
        if not ws:
            continue
        k = rng.randrange(len(ws))
        other = [w for w in pool[(p.interpreter, ws[k].name)] if w.sha256 != ws[k].sha256]
        if other and rng.random() < 0.5:
            ws[k] = rng.choice(other)
        else:
            del ws[k]
        out.append(replace(p, alias=f"{p.alias}~{len(out)}", wheels=ws))
    return out


# -- measuring a plan ---------------------------------------------------------------------------

_CONTRACT = load_definition(ROOT / "build" / "demo-pytorch-aarch64.json").compression
_DEFN = SimpleNamespace(compression=_CONTRACT, source_date_epoch=1)


def _size(layer: Layer) -> int:
    if layer.kind == "files":
        return sum(len((f.content or "").encode()) for f in layer.files)
    return sum(i.size for i in layer.inputs if i.kind != "run")


def _chain(layers: list[Layer]) -> list[tuple[str, dict[str, int]]]:
    """Per layer: its key as `keys.chain_keys` computes it (a run step keyed by everything below
    it, an unresolved base by its own key) and the blobs it stands for (key or digest → size)."""
    out, lower = [], []
    for la in layers:
        if la.kind == "base":
            blobs = {"sha256:" + i.sha256: i.size for i in la.inputs if is_layer_media(i.media_type)}
            k = canonical.key_of({"base": base_keys(la) or [i.sha256 for i in la.inputs]})
            out.append((k, blobs or {k: 0}))
            lower += list(blobs) or [k]
            continue
        k = layer_key(_DEFN, la, lower)  # type: ignore[arg-type]
        out.append((k, {k: _size(la)}))
        lower.append(k)
    return out


def measure(plans: dict[str, list[Layer]]) -> dict:
    """Per image: its layers' action-cache keys (what its digest is a function of) and OCI layer
    count; overall: the sum of image sizes and the unique bytes (each distinct blob once)."""
    digests, counts, unique, total = {}, {}, {}, 0
    for alias, layers in plans.items():
        chain = _chain(layers)
        digests[alias] = canonical.key_of([k for k, _ in chain])
        counts[alias] = sum(len(blobs) for _, blobs in chain)
        for _, blobs in chain:
            unique.update(blobs)
            total += sum(blobs.values())
    return {"digests": digests, "layers": counts, "unique": sum(unique.values()), "total": total}


def _timed(planner, parts: list[layering.Parts], repeat: int = 5) -> tuple[dict, float]:
    times, plans = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        plans = planner(parts)
        times.append(time.perf_counter() - t0)
    return plans, statistics.median(times)  # type: ignore[return-value]


PLANNERS = {"new": layering.plan, "today": reference_planner.plan}


def growth(planners=PLANNERS) -> dict:
    seq = [("committed", p) for p in committed()] + variants()
    state = {name: {} for name in planners}
    steps = []
    for n in range(1, len(seq) + 1):
        edit, added = seq[n - 1]
        parts = [p for _, p in seq[:n]]
        row: dict = {"step": n, "added": added.alias, "edit": edit}
        for name, planner in planners.items():
            plans, secs = _timed(planner, parts, repeat=3)
            m = measure(plans)
            before = state[name]
            changed = sorted(a for a, d in m["digests"].items() if a in before and before[a] != d)
            state[name] = m["digests"]
            row[name] = {"changed": changed, "unique_over_sum": round(m["unique"] / m["total"], 4),
                         "max_layers": max(m["layers"].values()), "plan_ms": round(secs * 1000, 2)}
        steps.append(row)
    return {"steps": steps, "images": len(seq)}


def summary(g: dict) -> dict:
    out = {}
    steps = [s for s in g["steps"] if s["step"] > 1]
    for name in PLANNERS:
        churned = [s for s in steps if s[name]["changed"]]
        out[name] = {
            "steps_with_churn": len(churned),
            "images_churned_total": sum(len(s[name]["changed"]) for s in steps),
            "worst_step": max((len(s[name]["changed"]) for s in steps), default=0),
            "unique_over_sum_final": g["steps"][-1][name]["unique_over_sum"],
            "unique_over_sum_mean": round(statistics.mean(s[name]["unique_over_sum"] for s in g["steps"]), 4),
            "max_layers": max(s[name]["max_layers"] for s in g["steps"]),
            "plan_ms_final": g["steps"][-1][name]["plan_ms"],
        }
    return out


def scale() -> dict:
    parts = scaled(committed() + [p for _, p in variants()])
    out = {"images": len(parts)}
    for name, planner in PLANNERS.items():
        plans, secs = _timed(planner, parts)
        m = measure(plans)
        out[name] = {"plan_seconds": round(secs, 4), "unique_over_sum": round(m["unique"] / m["total"], 4),
                     "max_layers": max(m["layers"].values())}
    return out


def _bumped(w: Input) -> Input:
    """The same wheel, another release of it: another file, the same name and size."""
    return w.model_copy(update={"sha256": canonical.sha256_hex(f"bumped:{w.sha256}".encode()), "version": w.version + ".post1"})


def bumps(planner, images: list[layering.Parts], *, whole: bool = True) -> dict:
    """Every wheel of every image bumped in turn (that image's own input changes): the bytes the
    registry must store anew beyond the new wheel itself (the rest of its layer, run steps above
    it, other images' regrouped layers) and how many *other* images change digest. `whole`:
    re-plan the whole matrix each time (as `lock` did); else only the edited image (the sweep:
    the new planner is per image)."""
    base = planner(images)
    m0 = measure(base)
    known = _keys_and_sizes(base)
    extra, others = [], []
    for i, p in enumerate(images):
        for k in range(len(p.wheels)):
            ws = list(p.wheels)
            ws[k] = _bumped(ws[k])
            q = replace(p, wheels=ws)
            plans = planner(images[:i] + [q] + images[i + 1:]) if whole else dict(base, **planner([q]))
            new = sum(size for key, size in _keys_and_sizes(plans if whole else {q.alias: plans[q.alias]}).items()
                      if key not in known)
            extra.append(new - ws[k].size)
            if whole:
                m = measure(plans)
                others.append(sum(1 for a, d in m["digests"].items() if a != p.alias and m0["digests"][a] != d))
    out = {"bumps": len(extra), "extra_bytes_mean": round(statistics.mean(extra)),
           "extra_bytes_median": round(statistics.median(extra))}
    if whole:
        out |= {"other_images_changed_mean": round(statistics.mean(others), 3),
                "bumps_changing_other_images": sum(o > 0 for o in others)}
    return out


def _keys_and_sizes(plans: dict[str, list[Layer]]) -> dict[str, int]:
    return {k: size for layers in plans.values() for _, blobs in _chain(layers) for k, size in blobs.items()}


def _buckets(n: int):
    """The alternative the sweep compares: a stable partition of the small wheels into `n`
    buckets by name hash (instead of content-defined boundaries over the sorted list)."""
    def groups(wheels, *, alone, group, big):
        bigs = [w for w in wheels if w.size >= big or w.size == 0]
        out = [[w] for w in wheels if alone <= w.size < big]
        by: dict[int, list[Input]] = {}
        for w in wheels:
            if 0 < w.size < alone:
                by.setdefault(int(canonical.sha256_hex(w.name.encode())[:16], 16) % (n * group // 4), []).append(w)
        out += list(by.values())
        out.sort(key=lambda g: g[0].name)
        return out, sorted(bigs, key=lambda w: w.name)
    return groups


def sweep() -> list[dict]:
    """The design space of the new planner on the full growth sequence: singleton threshold x
    expected group size, and the hash-bucket alternative."""
    images = committed() + [p for _, p in variants()]
    rows = []
    grid = [("boundaries", a, g) for a in (1, 2, 4, 8, 16, 32) for g in (2, 4, 8, 16)]
    grid += [(f"{n} buckets", 1, 4) for n in (4, 8, 16)]
    for how, alone_mib, group in grid:
        def planner(parts, alone=alone_mib << 20, group=group):
            return layering.plan(parts, alone=alone, group=group)
        saved = layering.wheel_groups
        if how != "boundaries":
            layering.wheel_groups = _buckets(int(how.split()[0]))
        try:
            m = measure(planner(images))
            b = bumps(planner, images, whole=False)
        finally:
            layering.wheel_groups = saved
        rows.append({"grouping": how, "alone_mib": alone_mib, "group": group,
                     "unique_over_sum": round(m["unique"] / m["total"], 4),
                     "max_layers": max(m["layers"].values()),
                     "mean_layers": round(statistics.mean(m["layers"].values()), 1),
                     "bump_extra_bytes_mean": b["extra_bytes_mean"]})
    return rows


def run(work: Path) -> dict:
    g = growth()
    images = committed() + [p for _, p in variants()]
    return {"summary": summary(g), "scale": scale(), "steps": g["steps"],
            "bumps": {name: bumps(planner, images) for name, planner in PLANNERS.items()}}


def _print(res: dict) -> None:
    print(f"{'step':>4} {'added':28} {'edit':22} {'churn new/today':>16} {'unique/sum new':>15} {'today':>7} "
          f"{'layers new/today':>17} {'ms new/today':>14}")
    for s in res["steps"]:
        n, t = s["new"], s["today"]
        print(f"{s['step']:>4} {s['added']:28} {s['edit']:22} {len(n['changed']):>7}/{len(t['changed']):<8} "
              f"{n['unique_over_sum']:>15.4f} {t['unique_over_sum']:>7.4f} {n['max_layers']:>8}/{t['max_layers']:<8} "
              f"{n['plan_ms']:>6.1f}/{t['plan_ms']:<7.1f}")
    print(json.dumps({"summary": res["summary"], "scale": res["scale"], "bumps": res["bumps"]}, indent=1, sort_keys=True))


if __name__ == "__main__":
    if "--relock" in sys.argv:
        relock()
    elif "--sweep" in sys.argv:
        print(f"{'grouping':>10} {'alone MiB':>9} {'group':>5} {'unique/sum':>10} {'max layers':>10} "
              f"{'mean layers':>11} {'bump: extra kB':>14}")
        for r in sweep():
            print(f"{r['grouping']:>10} {r['alone_mib']:>9} {r['group']:>5} {r['unique_over_sum']:>10.4f} {r['max_layers']:>10} "
                  f"{r['mean_layers']:>11} {r['bump_extra_bytes_mean'] / 1e3:>14.0f}")
    else:
        _print(run(Path(tempfile.gettempdir())))
