"""The layer plan: the 40-layer budget holds on a synthetic many-wheel matrix (a base image
counting with all its blobs), images with the same wheels share them layer for layer whatever
else the matrix holds, run steps keep their order, and `enginefab plan` reports sizes and the
bytes shared across the real matrix. (Churn: tests/test_layering_churn.py.)"""

from __future__ import annotations

import json
from pathlib import Path

from enginefab.core import canonical
from enginefab.core.definition import Input, load_definition
from enginefab.lock import layering
from tests.conftest import ROOT, enginefab


def wheel(name: str, size: int = 100_000) -> Input:
    sha = canonical.sha256_hex(name.encode())
    return Input(kind="wheel", name=name, version="1.0", url=f"https://files.example/{name}.whl", sha256=sha, size=size,
                 filename=f"{name}-1.0-py3-none-any.whl")


def deb(name: str) -> Input:
    return Input(kind="deb", name=name, version="1", url=f"http://deb.example/{name}.deb",
                 sha256=canonical.sha256_hex(b"deb" + name.encode()), size=50_000)


def base_blobs(n: int) -> list[Input]:
    out = [Input(kind="oci", name="cuda", version="10.2", url="docker.io/nvidia/cuda@sha256:" + "a" * 64,
                 sha256="a" * 64, size=2_000, media_type="application/vnd.oci.image.manifest.v1+json")]
    out += [Input(kind="oci", name=f"cuda layer {i}", version="10.2", url="docker.io/nvidia/cuda",
                  sha256=canonical.sha256_hex(b"blob%d" % i), size=10_000_000,
                  media_type="application/vnd.docker.image.rootfs.diff.tar.gzip") for i in range(n)]
    return out


def synthetic_matrix(images: int = 7, pool: int = 400) -> list[layering.Parts]:
    """Wheel k is used by the images in the bit mask (k mod 127) + 1: every one of the 127 sharing
    patterns occurs, so each image sees 64 sharing groups (~200 wheels); the wheels whose mask is
    all ones are in every image; every image has a big engine wheel; odd images sit on a 15-blob
    base image."""
    parts = []
    for n in range(images):
        mine = [wheel(f"w{k}") for k in range(pool) if ((k % (2**images - 1)) + 1) >> n & 1]
        p = layering.Parts(alias=f"img{n}", arch="x86_64", os_id="debian-11", python_id="3.9",
                           os=[deb("base-files"), deb("bash")], python=[deb("python3.9")],
                           wheels=sorted(mine + [wheel(f"engine{n % 2}", 900_000_000)], key=lambda i: i.name),
                           scheme={"purelib": "/usr/lib/python3/dist-packages"}, interpreter="/usr/bin/python3.9")
        if n % 2:
            p.base = base_blobs(15)
            p.os = []
        parts.append(p)
    return parts


def oci_layers(layers) -> int:
    return sum(layering._base_blobs(la.inputs) if la.kind == "base" else 1 for la in layers)


def test_every_image_of_a_many_wheel_matrix_fits_the_budget_and_keeps_its_wheels():
    parts = synthetic_matrix()
    plans = layering.plan(parts)
    unbudgeted = layering.plan(parts, budget=10_000)
    for p in parts:
        layers = plans[p.alias]
        assert oci_layers(layers) <= layering.BUDGET, (p.alias, oci_layers(layers))
        assert oci_layers(unbudgeted[p.alias]) > layering.BUDGET  # the budget had work to do
        installed = sorted(i.sha256 for la in layers if la.kind == "wheels" for i in la.inputs)
        assert installed == sorted(w.sha256 for w in p.wheels)  # each wheel exactly once
        assert any(la.id.startswith("wheel/engine") and len(la.inputs) == 1 for la in layers)


def test_images_with_the_same_wheels_share_every_wheel_layer_whatever_else_the_matrix_holds():
    """Two images on one Python with the same wheels (over different OS layers) get the same wheel
    layers, planned alone or among the many-wheel matrix; a third with one wheel more differs in
    one wheel layer only."""
    wheels = sorted([wheel(f"w{k}") for k in range(60)] + [wheel("engine", 900_000_000)], key=lambda i: i.name)
    common = dict(arch="x86_64", os_id="debian-11", python_id="3.9", python=[deb("python3.9")],
                  scheme={"purelib": "/usr/lib/python3/dist-packages"}, interpreter="/usr/bin/python3.9")
    a = layering.Parts(alias="a", os=[deb("bash")], wheels=wheels, **common)
    b = layering.Parts(alias="b", os=[deb("dash")], wheels=wheels, **common)
    c = layering.Parts(alias="c", os=[deb("bash")], wheels=sorted(wheels + [wheel("w-extra")], key=lambda i: i.name), **common)
    alone = layering.plan([a, b, c])
    crowded = layering.plan(synthetic_matrix() + [a, b, c])

    def wheel_layers(layers):
        return [la for la in layers if la.kind == "wheels"]

    assert wheel_layers(alone["a"]) == wheel_layers(alone["b"]) == wheel_layers(crowded["a"])
    assert alone["a"][0] != alone["b"][0]  # the OS layers differ
    ids_a, ids_c = {la.id for la in wheel_layers(alone["a"])}, {la.id for la in wheel_layers(alone["c"])}
    assert len(ids_a - ids_c) == 1 and 1 <= len(ids_c - ids_a) <= 2


def test_a_base_image_counts_with_all_its_blobs():
    parts = synthetic_matrix()
    with_base = [p for p in parts if p.base]
    plans = layering.plan(parts)
    for p in with_base:
        assert oci_layers(plans[p.alias]) <= layering.BUDGET
        assert len(plans[p.alias]) <= layering.BUDGET - 14  # 15 blobs in one `base` layer entry


def test_run_steps_keep_their_declared_order():
    def step(name: str) -> Input:
        return Input(kind="run", name=name, version="1", url=None, sha256=canonical.sha256_hex(name.encode()), size=1,
                     script=f"echo {name}\n")

    p = layering.Parts(alias="x", arch="x86_64", os=[deb("bash")], os_id="debian-11",
                       run=[step("zz-configure"), step("aa-compile"), step("mm-install")])
    run = next(la for la in layering.plan([p])["x"] if la.kind == "run")
    assert [i.name for i in run.inputs] == ["zz-configure", "aa-compile", "mm-install"]


def test_replanning_the_committed_definitions_reproduces_them():
    defs = {p.stem: load_definition(p) for p in sorted((ROOT / "build").glob("*.json"))}
    plans = layering.plan([layering.parts_of(d) for d in defs.values()])
    for alias, d in defs.items():
        assert [la.model_dump() for la in plans[alias]] == [la.model_dump() for la in d.layers], alias


def test_plan_reports_sizes_and_sharing(demo_build, demo_aliases):
    store = str(demo_build["store"])
    rep = json.loads(enginefab("plan", *demo_aliases, "--store", store, "--json", check=True).stdout)
    manifests = {}
    for r in demo_build["results"]:
        blob = Path(store) / "blobs/sha256" / r["digest"].split(":")[1]
        manifests[r["alias"]] = json.loads(blob.read_bytes())
    # built layers: exact sizes, the sum per image is the manifest's
    assert all(la["size_source"] == "built" for la in rep["layers"])
    for img in rep["images"]:
        assert img["size"] == sum(ld["size"] for ld in manifests[img["alias"]]["layers"])
    shared = [la for la in rep["layers"] if len(la["images"]) == 2]
    assert {la["id"].split("/")[0] for la in shared} == {"wheel", "config"}  # typing-extensions, users
    t = rep["totals"]
    assert t["sum_of_image_sizes"] == sum(i["size"] for i in rep["images"])
    assert t["unique_bytes"] == sum(la["size"] for la in rep["layers"])
    assert t["saved_by_sharing"] == sum(la["saves"] for la in rep["layers"]) == sum(la["size"] for la in shared) > 0
    # the whole matrix: every image within the budget, unbuilt layers estimated or unknown, sharing shown
    full = json.loads(enginefab("plan", "--store", store, "--json", check=True).stdout)
    assert full["totals"]["images"] == len(list((ROOT / "build").glob("*.json")))
    assert all(not i["over_budget"] and i["layers"] <= 40 for i in full["images"])
    assert full["totals"]["sizes"]["estimate"] > 0 and full["totals"]["saved_by_sharing"] > t["saved_by_sharing"]
    text = enginefab("plan", "--store", store, check=True).stdout
    assert "sharing saves" in text and "(estimate)" in text
