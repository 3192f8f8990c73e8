"""Layers that stay put (issue 14): an image's layers change only when its own inputs change.

The property is checked on a matrix made of the real locked wheels of the committed build/*.json
(names, sizes, sha256s, install schemes): random sequences of matrix edits — add an image, remove
one, change one (a wheel added, removed or swapped for another locked version of it, or the
image moved to another Python) — and after every edit no layer of an image whose own inputs did
not change may differ. The same property run against today's planner (bench/_reference_planner.py)
fails, so the test can tell the two apart. Then: what a layer's id says, `enginefab diff` between
two locks, `lock --check` on layers another planner made, and (network) the two TensorFlow 2.16
images of the issue locked into a copy of engines/ without touching any other definition.
"""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

from bench import _reference_planner as reference_planner
from enginefab.assemble.keys import layer_key
from enginefab.core.definition import Input, load_definition
from enginefab.lock import layering
from tests.conftest import ROOT, cli, enginefab, examples

DEFS = {p.stem: load_definition(p) for p in sorted((ROOT / "build").glob("*.json"))}
COMMITTED = [layering.parts_of(d) for d in DEFS.values()]
_DEFN = SimpleNamespace(compression=DEFS["demo-pytorch-aarch64"].compression, source_date_epoch=1)

#: interpreter → (scheme, every locked wheel of the committed matrix installed for it)
PYTHONS: dict[str, tuple[dict, list[Input]]] = {}
for _p in COMMITTED:
    scheme, pool = PYTHONS.setdefault(_p.interpreter, (_p.scheme, []))
    pool += [w for w in _p.wheels if w.sha256 not in {x.sha256 for x in pool}]


def keys(layers) -> list[str]:
    """The action-cache keys of an image's layers: what its blobs and digest are a function of."""
    out, lower = [], []
    for la in layers:
        k = layer_key(_DEFN, la, lower)  # type: ignore[arg-type]
        out.append(k)
        lower.append(k)
    return out


Edit = st.tuples(st.sampled_from(["add", "remove", "change"]), st.integers(0, 2**16), st.integers(0, 2**16),
                 st.integers(0, 2**16))


def apply(images: list[layering.Parts], edit: tuple, n: int) -> list[layering.Parts]:
    """One matrix edit, made of real locked wheels. Returns the new matrix (a new list)."""
    kind, a, b, c = edit
    images = list(images)
    if kind == "remove" and len(images) > 1:
        del images[a % len(images)]
        return images
    template = images[a % len(images)]
    interp = sorted(PYTHONS)[b % len(PYTHONS)]
    scheme, pool = PYTHONS[interp]
    if kind == "add":
        names = sorted({w.name for w in pool})
        pick = {names[(b * 7 + c * 13 + k * 31) % len(names)] for k in range(1 + c % 12)}
        ws = sorted((next(w for w in pool if w.name == name) for name in pick), key=lambda w: w.name)
        images.append(replace(template, alias=f"new-{n}", wheels=ws, scheme=scheme, interpreter=interp))
        return images
    i = a % len(images)
    p = images[i]
    ws = list(p.wheels)
    mine = PYTHONS[p.interpreter][1]  # the wheels locked for its own Python
    op = c % 4
    if op == 0 or not ws:  # a wheel added
        have = {w.name for w in ws}
        extra = [w for w in mine if w.name not in have]
        if extra:
            ws = sorted(ws + [extra[b % len(extra)]], key=lambda w: w.name)
    elif op == 1:  # a wheel removed
        del ws[b % len(ws)]
    elif op == 2:  # a wheel swapped for another locked version (or file) of it
        k = b % len(ws)
        other = [w for _, (_, pl) in sorted(PYTHONS.items()) for w in pl if w.name == ws[k].name and w.sha256 != ws[k].sha256]
        ws[k] = other[c % len(other)] if other else ws[k].model_copy(update={"sha256": "f" * 64, "version": "0+other"})
    else:  # the image moved to another Python: another scheme and interpreter
        images[i] = replace(p, scheme=scheme, interpreter=interp)
        return images
    images[i] = replace(p, wheels=ws)
    return images


def violations(planner, edits: list[tuple]) -> list[str]:
    """Apply `edits` one by one; after each, name every image whose own inputs did not change but
    whose layers did."""
    images = list(COMMITTED)
    before = {p.alias: (p, keys(ls)) for p, ls in zip(images, planner(images).values())}
    out = []
    for n, edit in enumerate(edits):
        images = apply(images, edit, n)
        plans = planner(images)
        after = {p.alias: (p, keys(plans[p.alias])) for p in images}
        for alias, (p, k) in after.items():
            if alias in before and before[alias][0] == p and before[alias][1] != k:
                out.append(f"edit {n} {edit[0]}: {alias}")
        before = after
    return out


@pytest.mark.parametrize("n_examples", examples(80, 10))
def test_no_edit_changes_a_layer_of_an_image_whose_inputs_did_not_change(n_examples):
    @settings(max_examples=n_examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(Edit, min_size=1, max_size=8))
    def run(edits):
        assert violations(layering.plan, edits) == []

    run()


def test_todays_planner_fails_the_same_property():
    """The property is not vacuous: hypothesis finds edits that make the reference planner
    (grouping by the set of images sharing a wheel) change untouched images."""
    found = find(st.lists(Edit, min_size=1, max_size=8), lambda e: bool(violations(reference_planner.plan, e)),
                 settings=settings(max_examples=300, database=None, deadline=None, phases=[Phase.generate]))
    assert violations(reference_planner.plan, found)


@pytest.mark.parametrize("n_examples", examples(40, 10))
def test_every_edited_image_keeps_each_wheel_once_within_the_budget(n_examples):
    @settings(max_examples=n_examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(Edit, min_size=1, max_size=6))
    def run(edits):
        images = list(COMMITTED)
        for n, e in enumerate(edits):
            images = apply(images, e, n)
        for p in images:
            layers = layering.plan_image(p)
            installed = sorted(i.sha256 for la in layers if la.kind == "wheels" for i in la.inputs)
            assert installed == sorted(w.sha256 for w in p.wheels)
            blobs = sum(layering._base_blobs(la.inputs) if la.kind == "base" else 1 for la in layers)
            assert blobs <= layering.BUDGET
            assert all(len(la.inputs) == 1 for la in layers
                       if la.kind == "wheels" and la.inputs[0].size >= layering.BIG)

    run()


def test_a_layer_id_names_its_bytes_and_another_python_gets_another_layer():
    """Equal ids mean equal layer objects (the same bytes under one contract) across the whole
    committed matrix, and the same wheels installed for Python 3.6 and 3.7 never share a layer
    (the cause of the issue's five rewritten presets)."""
    seen = {}
    for d in DEFS.values():
        for la in d.layers:
            if la.kind != "base":
                assert la.id.endswith("-" + layering.identity(la)), la.id
            what = (la.kind, [(i.sha256, i.filename, i.dest, i.script) for i in la.inputs], la.scheme, la.interpreter, la.files)
            assert seen.setdefault(la.id, what) == what, la.id
    six = next(w for w in PYTHONS["/opt/conda/bin/python3.7"][1] if w.name == "six")
    py37 = replace(COMMITTED[0], alias="a", wheels=[six], scheme=PYTHONS["/opt/conda/bin/python3.7"][0],
                   interpreter="/opt/conda/bin/python3.7")
    py36 = replace(py37, alias="b", scheme=PYTHONS["/opt/conda/bin/python3.6"][0], interpreter="/opt/conda/bin/python3.6")
    la, lb = (next(x for x in layering.plan_image(p) if x.kind == "wheels") for p in (py37, py36))
    assert la.inputs == lb.inputs and la.id != lb.id and keys([la]) != keys([lb])


def test_inserting_a_wheel_changes_only_its_own_group():
    """Content-defined boundaries: one wheel more changes one wheel layer (or splits one in two)."""
    p = next(p for p in COMMITTED if p.alias == "tensorflow-cuda10.1")
    before = {la.id for la in layering.plan_image(p) if la.kind == "wheels"}
    for extra in PYTHONS[p.interpreter][1]:
        if extra.name in {w.name for w in p.wheels}:
            continue
        q = replace(p, wheels=sorted(p.wheels + [extra], key=lambda w: w.name))
        after = {la.id for la in layering.plan_image(q) if la.kind == "wheels"}
        assert len(before - after) <= 1 and len(after - before) <= 2, extra.name


# -- churn visible: enginefab diff between two locks ------------------------------------------


def test_diff_between_locks_names_the_changed_image_its_layers_and_why(engines_copy):
    """One image's numpy moves to another locked file: `enginefab diff` between the checkout and
    the copy names that image, the one layer replaced with the reason, every other image
    unchanged, no churn; a definition whose layers were regrouped without an input change is
    flagged as churn."""
    alias = "pytorch-cuda10.2"
    d = DEFS[alias]
    numpy = next(i for i in d.inputs() if i.name == "numpy")
    other = next(w for w in PYTHONS[d.python.interpreter][1] if w.name == "numpy" and w.sha256 != numpy.sha256)
    p = layering.parts_of(d)
    p.wheels = [other if w.name == "numpy" else w for w in p.wheels]
    (engines_copy / "build" / f"{alias}.json").write_bytes(
        d.model_copy(update={"layers": layering.plan_image(p)}).to_json())
    # and an image regrouped by hand: two wheel layers joined, the same inputs
    victim = "tensorflow-cuda10.1"
    v = DEFS[victim]
    small = [la for la in v.layers if la.kind == "wheels" and len(la.inputs) > 1][:2]
    joined = small[0].model_copy(update={"id": "wheels/joined-00000000", "inputs": small[0].inputs + small[1].inputs})
    layers = [joined if la is small[0] else la for la in v.layers if la is not small[1]]
    (engines_copy / "build" / f"{victim}.json").write_bytes(v.model_copy(update={"layers": layers}).to_json())

    p_ = cli("diff", str(ROOT), str(engines_copy), "--json")
    assert p_.returncode == 1, p_.stderr
    res = json.loads(p_.stdout)
    rows = {r["alias"]: r for r in res["images"]}
    row = rows[alias]
    assert row["digest_changes"] and not row["churn"] and f"numpy {numpy.version} → {other.version}" in row["why"]
    at = next(n for n, la in enumerate(d.layers) if numpy in la.inputs)
    above = [la.id for la in d.layers[at:] if la.kind == "run"]  # run steps: their output depends on what is below
    assert [la["id"] for la in row["layers"]["removed"]] == [la.id for la in d.layers if numpy in la.inputs] + above
    added = [la for la in row["layers"]["added"] if la["kind"] == "wheels"]
    assert len(added) == 1 and f"numpy {numpy.version} → {other.version}" in added[0]["why"]
    rebuilt = [la["why"] for la in row["layers"]["added"] if la["kind"] == "run"]
    assert rebuilt == ["rebuilt: a layer below this run step changed"] * len(above)
    assert row["layers"]["kept"] == len(d.layers) - 1 - len(above)
    assert rows[victim]["churn"] and "re-planned only" in rows[victim]["why"]
    assert any(la["why"].startswith("regrouped") for la in rows[victim]["layers"]["added"])
    assert {a for a, r in rows.items() if r["status"] != "unchanged"} == {alias, victim}
    assert res["totals"]["churn"] == 1 and res["totals"]["digests_change"] == 2
    text = cli("diff", str(ROOT), str(engines_copy)).stdout
    assert f"≠ {victim}: re-planned only: its inputs did not change  [churn]" in text
    assert "= demo-pytorch-aarch64: unchanged" in text


def test_lock_check_refuses_layers_another_planner_made(engines_copy):
    """A definition whose layers are not what this planner makes of its inputs (another planner
    version, or edited by hand) would build other digests: `lock --check` names it."""
    victim = "mindspore-cuda10.1"
    v = DEFS[victim]
    parts = [layering.parts_of(d) for d in DEFS.values()]
    old = reference_planner.plan(parts)[victim]  # today's planner, whole matrix
    assert [la.id for la in old] != [la.id for la in v.layers]
    (engines_copy / "build" / f"{victim}.json").write_bytes(v.model_copy(update={"layers": old}).to_json())
    odd = DEFS["demo-pytorch-x86_64"]  # and a layer id no planner makes (edited by hand)
    layers = [la.model_copy(update={"id": "bogus/" + la.id.partition("/")[2]}) if la.kind == "wheels" else la
              for la in odd.layers]
    (engines_copy / "build" / "demo-pytorch-x86_64.json").write_bytes(odd.model_copy(update={"layers": layers}).to_json())
    p = cli("lock", "--check", "--json", cwd=engines_copy)
    res = json.loads(p.stdout)
    assert p.returncode == 1 and len(res["problems"]) == 3, res["problems"]
    assert any(x.startswith("demo-model-x86_64: parent demo-pytorch-x86_64 changed") for x in res["problems"])
    mine = next(x for x in res["problems"] if x.startswith(f"{victim}: "))
    assert "not what this enginefab plans" in mine and f"`enginefab lock {victim}`" in mine
    bogus = next(x for x in res["problems"] if x.startswith("demo-pytorch-x86_64: "))
    assert "no planner makes a layer bogus/" in bogus


# -- the scenario, for real (PyPI and the Debian archive) -----------------------------

TF216 = '''
[[engine.releases]]
version = "2.16.2"
python = ["3.9", "3.10", "3.11", "3.12"]
builds = [
  { accelerator = "cuda", versions = ["12.3"], arches = ["x86_64"] },
  { accelerator = "cpu", arches = ["x86_64", "aarch64"] },
]
source = "tensorflow.org tested build configurations (2.16: Python 3.9-3.12, CUDA 12.3); PyPI tensorflow 2.16.2 files"
'''


@pytest.mark.network
def test_adding_tensorflow_2_16_on_debian_12_changes_no_other_definition(engines_copy):
    """Issue 14 as reported: two TensorFlow 2.16.2 CPU images on Debian 12 / Python 3.11 (the OS
    and runtime of the committed platforms.toml), x86_64 and aarch64, locked alone."""
    toml = engines_copy / "engines" / "tensorflow.toml"
    text = toml.read_text() + TF216
    for arch in ("x86_64", "aarch64"):
        text += (f'\n[[image]]\nalias = "tf2.16-cpu-{arch}"\nname = "tensorflow_2.16.2-cpu-py_3.11-debian_12-{arch}"\n'
                 f'engine_version = "2.16.2"\npython = "3.11"\nos = "debian-12"\naccelerator = "cpu"\narch = "{arch}"\n'
                 f'requirements = ["tensorflow==2.16.2"]\n')
    toml.write_text(text)
    before = {p.name: p.read_bytes() for p in (engines_copy / "build").glob("*.json")}
    p = enginefab("lock", "tf2.16-cpu-x86_64", "tf2.16-cpu-aarch64", "--json", cwd=engines_copy, timeout=900)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["written"] == ["tf2.16-cpu-aarch64", "tf2.16-cpu-x86_64"]
    after = {p.name: p.read_bytes() for p in (engines_copy / "build").glob("*.json")}
    assert set(after) == set(before) | {"tf2.16-cpu-x86_64.json", "tf2.16-cpu-aarch64.json"}
    assert {n: b for n, b in after.items() if n in before} == before  # no committed definition changed
    new = {a: load_definition(engines_copy / "build" / f"{a}.json") for a in ("tf2.16-cpu-x86_64", "tf2.16-cpu-aarch64")}
    for d in new.values():
        assert d.python.site_packages == "/usr/local/lib/python3.11/dist-packages" and d.image.glibc == "2.36"
        assert any(la.id.startswith("wheel/tensorflow-2.16.2-") for la in d.layers)
    res = json.loads(enginefab("diff", str(ROOT), str(engines_copy), "--json").stdout)
    assert res["totals"]["added"] == 2 and res["totals"]["digests_change"] == 0 and res["totals"]["churn"] == 0
    assert enginefab("lock", "--check", cwd=engines_copy).returncode == 0
