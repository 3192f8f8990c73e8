"""`enginefab lock` and `lock --check` on the real matrix: re-locking gives the same bytes, the
committed build/ is current, a changed pin is named, and every preset's definition carries its
engine and the Python closure its engine version needs."""

from __future__ import annotations

import json
import re

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import ROOT, cli, enginefab

HEX = re.compile(r"^[0-9a-f]{64}$")


def _presets():
    from enginefab.engines.matrix import load

    from enginefab.demo import demo_images

    m = load(ROOT)
    demos = demo_images(m)  # the demos and the images derived from them (the demo model)
    return [i.alias for i in m.images if i not in demos]


@pytest.mark.network
def test_locking_the_demos_twice_gives_identical_bytes(engines_copy, root, demo_aliases):
    """From scratch, twice (names in the other order, another TZ, locale and umask): the same
    bytes both times, and the same bytes as the committed definitions."""
    committed = {a: (root / "build" / f"{a}.json").read_bytes() for a in demo_aliases}
    runs = []
    for args, env in ((["--demo"], {}),
                      (list(reversed(demo_aliases)), {"TZ": "Asia/Shanghai", "LC_ALL": "C", "LANG": "zh_CN.UTF-8"})):
        for a in demo_aliases:
            (engines_copy / "build" / f"{a}.json").unlink()
        p = enginefab("lock", *args, "--json", cwd=engines_copy, env=env, timeout=600)
        assert p.returncode == 0, p.stderr
        assert set(json.loads(p.stdout)["written"]) == set(demo_aliases)
        runs.append({a: (engines_copy / "build" / f"{a}.json").read_bytes() for a in demo_aliases})
    assert runs[0] == runs[1]
    assert runs[0] == committed
    # locking the demos touches no other definition
    for alias in _presets():
        assert (engines_copy / "build" / f"{alias}.json").read_bytes() == (root / "build" / f"{alias}.json").read_bytes()


def test_lock_check_passes_on_the_checkout():
    p = cli("lock", "--check", "--json")
    res = json.loads(p.stdout)
    assert p.returncode == 0 and res["ok"], res["problems"]
    # what is not pinned yet is said out loud: manual files awaiting a user, bases not followed
    assert any("awaits a user-supplied file" in w for w in res["warnings"])


def test_lock_check_with_strict_fails_on_awaiting_manual_inputs():
    p = cli("lock", "--check", "--strict", "--json")
    res = json.loads(p.stdout)
    assert p.returncode == 1 and not res["ok"]
    awaiting = [x for x in res["problems"] if "awaits a user-supplied file" in x]
    assert any(x.startswith("tensorflow-cann5.0.2:") and "Ascend-cann-tfplugin_5.0.2.alpha003_linux-aarch64.run" in x
               for x in awaiting)
    # KungFu's source is a git input pinned by tree and archive sha256, TF 1.15 aarch64 a third-party-pinned URL;
    # what --strict adds for the CUDA presets is NVIDIA's packages awaiting a lock that reaches NVIDIA
    assert not [x for x in res["problems"] if x.startswith("kungfu-tf1.13:") and "packages are not pinned yet" not in x]
    assert any(x.startswith("kungfu-tf1.13: layer stack/cuda-10.0-devel-") and "packages are not pinned yet" in x
               for x in res["problems"])
    assert not [x for x in awaiting if "tensorflow-1.15.0" in x]


def test_lock_check_names_image_and_input_after_a_pin_is_edited(engines_copy):
    toml = engines_copy / "engines" / "horovod.toml"
    old = "c45bfcb9bd96852d79c62976eda12e9320b58b64f55bee3772877b3fc6243f2a"  # horovod-0.22.1.tar.gz
    toml.write_text(toml.read_text().replace(old, "0" * 64, 1))  # the first of its two images
    p = cli("lock", "--check", "--json", cwd=engines_copy)
    res = json.loads(p.stdout)
    assert p.returncode == 1 and not res["ok"]
    assert len(res["problems"]) == 1, res["problems"]
    problem = res["problems"][0]
    assert problem.startswith("horovod-pytorch-cuda10.2: stale: engines/ changed since it was locked")
    assert f'image.files[horovod].sha256: "{old}" → "{"0" * 64}"' in problem
    assert "`enginefab lock horovod-pytorch-cuda10.2`" in problem


def test_lock_check_names_every_image_a_shared_pin_reaches(engines_copy):
    toml = engines_copy / "engines" / "platforms.toml"
    old = "a1a7285dea0edc430b2bc7951d89bb30a2a1b32026d2a7b02aacaaa95cf69c7c"  # Miniconda py37 x86_64
    toml.write_text(toml.read_text().replace(old, "f" * 64))
    res = json.loads(cli("lock", "--check", "--json", cwd=engines_copy).stdout)
    stale = {x.split(":", 1)[0] for x in res["problems"]}
    assert stale == {"tensorflow-cuda10.1", "pytorch-cuda10.2", "mindspore-cuda10.1", "horovod-tensorflow-cuda10.1",
                     "horovod-pytorch-cuda10.2"}
    assert all("python.files[Miniconda3-py37_4.10.3-Linux-x86_64.sh].sha256" in x for x in res["problems"])


def test_lock_check_catches_a_pin_edited_in_build(engines_copy):
    """A definition edited by hand (in canonical form, so only the pin differs) is refused."""
    from enginefab.core import canonical

    path = engines_copy / "build" / "mindspore-cuda10.1.json"
    d = json.loads(path.read_bytes())
    (wheel,) = [i for layer in d["layers"] for i in layer["inputs"] if i["name"] == "mindspore-gpu"]
    wheel["sha256"] = "e" * 64  # Huawei's cuda-10.1 wheel is 7433bde8…
    path.write_bytes(canonical.dumps_pretty(d))
    res = json.loads(cli("lock", "--check", "--json", cwd=engines_copy).stdout)
    assert not res["ok"]
    assert any(x.startswith("mindspore-cuda10.1: input wheel:mindspore-gpu==1.3.0: build/ differs from engines/: sha256")
               for x in res["problems"]), res["problems"]


# -- the presets ----------------------------------------------------------------------------

#: the engine's own artifact in each preset (and the framework's under layered engines):
#: (input kind, name, version); manual ones have no published hash and await the file
ARTIFACTS = {
    "tensorflow-cuda10.1": [("wheel", "tensorflow-gpu", "2.1.0")],
    "pytorch-cuda10.2": [("wheel", "torch", "1.8.0"), ("wheel", "torchvision", "0.9.0")],
    "mindspore-cann5.0.2": [("wheel", "mindspore-ascend", "1.3.0")],
    "tensorflow-cann5.0.2": [("wheel", "tensorflow", "1.15.0")],
    "mindspore-cuda10.1": [("wheel", "mindspore-gpu", "1.3.0"), ("url", "openmpi", "4.0.3")],
    "horovod-tensorflow-cuda10.1": [("url", "horovod", "0.20.0"), ("wheel", "tensorflow-gpu", "2.1.0")],
    "horovod-pytorch-cuda10.2": [("url", "horovod", "0.22.1"), ("wheel", "torch", "1.8.0")],
    "kungfu-tf1.13": [("git", "KungFu", "0.2.2"), ("wheel", "tensorflow-gpu", "1.13.1")],
    "demo-horovod-x86_64": [("url", "horovod", "0.22.1"), ("wheel", "torch", "1.8.0")],
}


def test_every_preset_is_covered():
    assert set(ARTIFACTS) == set(_presets())


@pytest.fixture(scope="module")
def shown():
    """`enginefab show ALIAS --json` of every preset."""
    return {a: json.loads(cli("show", a, "--json", check=True).stdout) for a in ARTIFACTS}


@pytest.mark.parametrize("alias", sorted(ARTIFACTS))
def test_show_lists_the_engine_artifact_and_the_python_closure(alias, shown, matrix):
    from packaging.tags import parse_tag

    from enginefab.core.pytarget import Target

    d = shown[alias]
    img = matrix.get(alias)
    inputs = [i for layer in d["layers"] for i in layer["inputs"]]
    for i in inputs:
        assert {"kind", "name", "version", "url", "sha256", "size"} <= set(i), i
        # pinned by a published sha256, or a manual input that says where to get the file, or a package
        # that awaits a lock where its repository (NVIDIA's, Ubuntu's) is reachable, naming it
        assert ((i["sha256"] and HEX.match(i["sha256"])) or (i["kind"] == "manual" and i["where"])
                or (i["kind"] == "deb" and i["url"] is None and i["where"].startswith("apt "))), i
    by = {(i["kind"], i["name"]): i for i in inputs}
    for kind, name, version in ARTIFACTS[alias]:
        art = by[(kind, name)]
        assert art["version"] == version
        assert HEX.match(art["sha256"] or "") if kind != "manual" else art["sha256"] is None and art["where"]
    assert Version(ARTIFACTS[alias][0][2]) == Version(img.d.engine_version)

    # the Python closure: one version per package, every wheel installable by the image's Python
    wheels = [i for i in inputs if i["kind"] == "wheel"]
    build = [layer for layer in d["layers"] if layer["id"].startswith("compile/")]
    sdists = [i for layer in build for i in layer["inputs"] if i["kind"] == "url"]
    names = [i["name"] for i in wheels + sdists]
    assert len(names) == len(set(names)), sorted(names)
    target = Target(python=d["python"]["version"], arch=d["image"]["arch"], glibc=d["image"]["glibc"])
    for w in wheels:
        tags = w["filename"][:-4].split("-")[-3:]
        assert set(parse_tag("-".join(tags))) & set(target.tags()), f"{w['filename']} does not install on {target}"
    locked = {i["name"]: Version(i["version"]) for i in wheels + sdists}
    # every requirement is in the closure at a version it allows, every constraint holds
    for req in img.d.requirements + img.d.constraints:
        r = Requirement(req)
        name = str(canonicalize_name(r.name))
        if req in img.d.requirements:
            assert name in locked, f"{alias}: {name} missing from the closure"
        if name in locked:
            assert r.specifier.contains(locked[name], prereleases=True), f"{alias}: {name} {locked[name]} violates {req}"
    # sdists of the closure (PyPI files) are built in the image's one build/ run layer, which installs them
    if build:
        (layer,) = build
        (step,) = [i for i in layer["inputs"] if i["kind"] == "run"]
        assert sdists and all(f"/enginefab/inputs/{s['filename']}" in step["script"] for s in sdists)
        assert all(s["url"].startswith("https://files.pythonhosted.org/") for s in sdists)


def test_preset_closures_avoid_the_known_breakages(shown):
    """The caps engines/ declares are what make these closures work with their engine version."""
    def v(alias, name):
        return next(Version(i["version"]) for layer in shown[alias]["layers"] for i in layer["inputs"]
                    if i["name"] == name and i["kind"] in ("wheel", "url"))

    for tf2 in ("tensorflow-cuda10.1", "horovod-tensorflow-cuda10.1"):
        assert v(tf2, "protobuf") < Version("3.21") and v(tf2, "h5py") < Version("3")
        assert v(tf2, "numpy") < Version("1.19") and v(tf2, "wrapt") < Version("1.15")
        assert v(tf2, "gast") == Version("0.2.2") and v(tf2, "scipy") == Version("1.4.1")
    assert v("kungfu-tf1.13", "gast") == Version("0.2.2") and v("kungfu-tf1.13", "protobuf") < Version("3.20")
    assert Version("1.16") <= v("kungfu-tf1.13", "numpy") < Version("1.17")
    assert v("tensorflow-cann5.0.2", "protobuf") == Version("3.11.3")
    assert v("tensorflow-cann5.0.2", "tensorflow-estimator") == Version("1.15.1")
    for hvd in ("horovod-tensorflow-cuda10.1", "horovod-pytorch-cuda10.2", "kungfu-tf1.13", "demo-horovod-x86_64"):
        # CMake is a build-only tool of the compile step (in no layer), below 4 all the same
        tools = [t for layer in shown[hvd]["layers"] for t in layer.get("tools") or []]
        assert [Version(t["version"]) < Version("4") for t in tools if t["name"] == "cmake"] == [True], hvd
        assert "cmake" not in {i["name"] for layer in shown[hvd]["layers"] for i in layer["inputs"]}, hvd
    for ms in ("mindspore-cuda10.1", "mindspore-cann5.0.2"):
        assert Version("3.13") <= v(ms, "protobuf") < Version("3.21")
    assert v("pytorch-cuda10.2", "numpy") < Version("1.22")


@pytest.mark.network
def test_add_file_pins_a_manual_input_on_first_use(engines_copy, tmp_path):
    """CANN publishes no sha256: the first file a user adds is recorded (engines/manual-pins.toml,
    reviewable), the images using it become stale until re-locked, and the lock then carries its
    hash; another file under the same name is refused."""
    env = {"ENGINEFAB_CACHE": str(tmp_path / "cache")}
    name = "Ascend-cann-nnae_5.0.2.1_linux-aarch64.run"
    supplied = tmp_path / name
    supplied.write_bytes((ROOT / "engines" / "platforms.toml").read_bytes())  # what the user downloaded
    sha = __import__("hashlib").sha256(supplied.read_bytes()).hexdigest()
    p = enginefab("lock", "--add-file", str(supplied), "--json", cwd=engines_copy, env=env)
    assert p.returncode == 0, p.stderr
    (added,) = json.loads(p.stdout)
    assert added["sha256"] == sha and added["status"] == "recorded in engines/manual-pins.toml"
    assert (tmp_path / "cache" / "downloads" / "sha256" / sha).read_bytes() == supplied.read_bytes()
    pins = (engines_copy / "engines" / "manual-pins.toml").read_text()
    assert f'[files."{name}"]' in pins and f'sha256 = "{sha}"' in pins

    res = json.loads(enginefab("lock", "--check", "--json", cwd=engines_copy).stdout)
    assert {x.split(":", 1)[0] for x in res["problems"]} == {"mindspore-cann5.0.2", "tensorflow-cann5.0.2"}
    assert all(f"manual_pins.{name}" in x for x in res["problems"])

    assert enginefab("lock", "mindspore-cann5.0.2", cwd=engines_copy, env=env, timeout=600).returncode == 0
    defn = json.loads((engines_copy / "build" / "mindspore-cann5.0.2.json").read_bytes())
    (nnae,) = [i for layer in defn["layers"] for i in layer["inputs"] if i["name"] == name]
    assert nnae["sha256"] == sha and nnae["size"] == supplied.stat().st_size

    supplied.write_bytes(b"another file " + supplied.read_bytes())
    p = enginefab("lock", "--add-file", str(supplied), "--json", cwd=engines_copy, env=env)
    err = json.loads(p.stdout)
    assert p.returncode == 2 and f"manual-pins.toml records {sha}" in err["error"]
    assert err["input"] == f"manual:{name}" and "download the file again" in err["fix"]
