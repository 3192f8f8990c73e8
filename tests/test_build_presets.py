"""The presets' inputs are partly out of reach here (NVIDIA bases, Anaconda, Huawei, manual files):
a plain build names the unreachable input and the way out; --reachable-layers builds every layer
whose inputs come from PyPI or the Debian archive and reports the rest."""

from __future__ import annotations

import json
import urllib.parse

import pytest

from tests.conftest import ROOT, enginefab

pytestmark = pytest.mark.slow
REACHABLE = {"files.pythonhosted.org", "pypi.org", "deb.debian.org"}


def reachable(inp: dict) -> bool:
    return inp["kind"] in ("wheel", "deb", "url") and urllib.parse.urlparse(inp.get("url") or "").hostname in REACHABLE


def smallest_preset() -> tuple[str, dict]:
    """The preset whose reachable layers download the fewest bytes (keeps the test quick)."""
    best = None
    for path in sorted((ROOT / "build").glob("*.json")):
        d = json.loads(path.read_text())
        if d["matrix"]["image"].get("demo"):
            continue
        ok = [la for la in d["layers"] if la["inputs"] and la["kind"] != "run" and all(map(reachable, la["inputs"]))]
        cost = sum(i["size"] for la in ok for i in la["inputs"])
        if ok and len(ok) < len(d["layers"]) and (best is None or cost < best[0]):
            best = (cost, path.stem, d)
    assert best is not None, "no preset with both reachable and unreachable layers"
    return best[1], best[2]


def test_a_preset_builds_every_reachable_layer_and_reports_the_others(tmp_path):
    alias, defn = smallest_preset()
    store, out = str(tmp_path / "store"), str(tmp_path / "layout")

    plain = enginefab("build", alias, "--store", store, "--out", out)
    assert plain.returncode == 2
    assert "input " in plain.stderr and f"--reachable-layers {alias}" in plain.stderr, plain.stderr

    p = enginefab("build", alias, "--reachable-layers", "--store", store, "--out", out, "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(p.stdout)[0]
    assert r["digest"] is None and r["failed"] == 0
    by_id = {o["id"]: o for o in r["layer_results"]}
    for layer in defn["layers"]:
        o = by_id[layer["id"]]
        if layer["kind"] != "run" and layer["inputs"] and all(map(reachable, layer["inputs"])):
            assert o["status"] == "built", o  # PyPI and Debian inputs: built here
            assert o["size"] > 0
        elif layer["kind"] == "run":
            assert o["status"] in ("blocked", "unreachable"), o
        else:
            assert o["status"] == "unreachable", o
            names = {f"{i['kind']}:{i['name']}=={i['version']}" for i in layer["inputs"]}
            assert o["input"] in names or o["input"].startswith("oci:"), o  # names the input out of reach
    assert r["built"] >= 1 and r["unreachable"] >= 1

    # again: every reachable layer is a cache hit; the text form ends with the image's status line
    again = enginefab("build", alias, "--reachable-layers", "--store", store, "--out", out)
    assert again.returncode == 0
    assert again.stdout.strip().splitlines()[-1].startswith(f"{alias} incomplete: {r['built']} of ")
    plan = json.loads(enginefab("plan", alias, "--store", store, "--json", check=True).stdout)
    built = {la["id"] for la in plan["layers"] if la["size_source"] == "built"}
    assert built == {o["id"] for o in r["layer_results"] if o["status"] == "built"}


@pytest.mark.network  # a real file of the PyPI index
def test_bytes_that_differ_from_the_pin_fail_the_layer_even_with_reachable_layers(tmp_path):
    """Reachable but wrong (the index served other bytes than the lock's sha256): that is a
    failure, never an 'unreachable' to skip, and nothing enters the download cache."""
    from enginefab.transport import download
    from tests.conftest import definition_file, demo_definition, pypi_file, session_for

    downloads = session_for().downloads

    defn = demo_definition("demo-pytorch-aarch64")
    other = pypi_file("typing-extensions", "typing_extensions-4.14.0-py3-none-any.whl")  # a real hash, another file
    assert download.cached(other["sha256"], downloads) is None
    layers = [layer.model_copy(update={"inputs": [i.model_copy(update={"sha256": other["sha256"]})
                                                  for i in layer.inputs]})
              for layer in defn.layers if layer.id.startswith("wheel/typing-extensions-")]
    path = definition_file(defn.model_copy(update={"layers": layers}), tmp_path / "wrong.json")
    p = enginefab("build", str(path), "--reachable-layers", "--store", str(tmp_path / "s"), "--out",
                  str(tmp_path / "l"), "--json")
    assert p.returncode == 2
    r = json.loads(p.stdout)[0]
    assert r["layer_results"][0]["status"] == "failed" and "the pin says" in r["layer_results"][0]["error"]
    assert download.cached(other["sha256"], downloads) is None
