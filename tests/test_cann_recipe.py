"""CANN 5.0.2 is installed the way Ascend's own images install it (Ascend/ascend-docker-image at
1a44326, ascend-train and ascend-tensorflow Dockerfiles): stub driver `version.info` and
`/etc/ascend_install.info` present while the installer runs with `--install-username=root
--install-usergroup=root --install-for-all`, gone afterwards; the environment those images set;
ma-user and HwHiAiUser reconciled; the definition rules know CANN 5.0.2's framework and driver.

The run steps are read from the locked definitions (build/*.json) and executed by a shell with
their absolute paths moved into a scratch directory, against stand-in installers that record
what they saw: the CANN `.run` files themselves are behind a login.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from enginefab.core.definition import Definition
from enginefab.engines.matrix import load
from enginefab.lock.declared import declared_inputs

from .conftest import ROOT, cli
from .test_check_definition import refusal_of, set_field, tables

NNAE = "Ascend-cann-nnae_5.0.2.1_linux-aarch64.run"
TFPLUGIN = "Ascend-cann-tfplugin_5.0.2.alpha003_linux-aarch64.run"
FLAGS = ["--quiet", "--install", "--install-path=/usr/local/Ascend", "--install-username=root",
         "--install-usergroup=root", "--install-for-all"]
NNAE_PATH = "/usr/local/Ascend/nnae/latest"

# what a stand-in installer records: its arguments and, at the moment it runs, the two stubs
FAKE_INSTALLER = """#!/bin/sh
echo "$@" > "$SCRATCH/argv"
cat "$SCRATCH/usr/local/Ascend/driver/version.info" > "$SCRATCH/saw-version.info" 2>/dev/null || echo MISSING > "$SCRATCH/saw-version.info"
cat "$SCRATCH/etc/ascend_install.info" > "$SCRATCH/saw-install.info" 2>/dev/null || echo MISSING > "$SCRATCH/saw-install.info"
mkdir -p "$SCRATCH/usr/local/Ascend/nnae/latest/fwkacllib/lib64"
for w in topi te hccl; do : > "$SCRATCH/usr/local/Ascend/nnae/latest/fwkacllib/lib64/$w-0.1.0-py3-none-any.whl"; done
"""
FAKE_PYTHON = """#!/bin/sh
echo "$@" >> "$SCRATCH/pip.log"
"""


def definition(alias: str) -> Definition:
    return Definition.model_validate_json((ROOT / "build" / f"{alias}.json").read_bytes())


def step(defn: Definition, name: str):
    (i,) = [i for i in defn.inputs() if i.kind == "run" and i.name == name]
    return i


def run_moved(script: str, scratch: Path, installer: str) -> None:
    """Run a locked step's script with /usr/local/Ascend, /etc and /enginefab/inputs under `scratch`."""
    for d in ("etc", "inputs", "bin"):
        (scratch / d).mkdir(parents=True, exist_ok=True)
    (scratch / "inputs" / installer).write_text(FAKE_INSTALLER)
    (scratch / "bin" / "python3.7").write_text(FAKE_PYTHON)
    (scratch / "bin" / "python3.7").chmod(0o755)
    moved = (script.replace("/usr/local/Ascend", f"{scratch}/usr/local/Ascend")
             .replace("/etc/ascend_install.info", f"{scratch}/etc/ascend_install.info")
             .replace("/enginefab/inputs", f"{scratch}/inputs"))
    assert moved.count(str(scratch)) >= 5  # every path the recipe touches was moved
    env = {"PATH": f"{scratch}/bin:/usr/bin:/bin", "SCRATCH": str(scratch)}
    subprocess.run(["sh", "-c", moved], env=env, check=True, cwd=scratch, timeout=60)


@pytest.mark.parametrize("alias", ["mindspore-cann5.0.2", "tensorflow-cann5.0.2"])
def test_nnae_runs_with_the_stubs_for_root_and_all_users_and_the_stubs_go(alias, tmp_path):
    s = step(definition(alias), "install-cann")
    run_moved(s.script or "", tmp_path, NNAE)
    argv = (tmp_path / "argv").read_text().split()
    assert argv == [f.replace("/usr/local/Ascend", f"{tmp_path}/usr/local/Ascend") for f in FLAGS]
    assert (tmp_path / "saw-version.info").read_text().startswith("Version=")
    info = dict(line.split("=", 1) for line in (tmp_path / "saw-install.info").read_text().split())
    assert info["UserName"] == info["UserGroup"] == "HwHiAiUser" and info["Driver_Install_Type"] == "full"
    # removed afterwards: the driver directory is the host's, mounted at run time
    assert not (tmp_path / "usr/local/Ascend/driver").exists()
    assert not (tmp_path / "etc/ascend_install.info").exists()
    assert (tmp_path / "usr/local/Ascend/nnae").is_dir()  # what the installer wrote stays
    pips = (tmp_path / "pip.log").read_text().splitlines()
    assert [p.rsplit("/", 1)[-1].split("-")[0] for p in pips] == ["topi", "te", "hccl"]


def test_tfplugin_runs_with_the_same_recipe(tmp_path):
    s = step(definition("tensorflow-cann5.0.2"), "install-tfplugin")
    run_moved(s.script or "", tmp_path, TFPLUGIN)
    argv = (tmp_path / "argv").read_text().split()
    assert argv == [f.replace("/usr/local/Ascend", f"{tmp_path}/usr/local/Ascend") for f in FLAGS]
    assert "MISSING" not in (tmp_path / "saw-version.info").read_text() + (tmp_path / "saw-install.info").read_text()
    assert not (tmp_path / "usr/local/Ascend/driver").exists() and not (tmp_path / "etc/ascend_install.info").exists()


@pytest.mark.parametrize("alias", ["mindspore-cann5.0.2", "tensorflow-cann5.0.2"])
def test_the_environment_is_ascends(alias):
    env = definition(alias).config.env
    assert env["GLOG_v"] == "2"
    ld = env["LD_LIBRARY_PATH"].split(":")
    assert f"{NNAE_PATH}/fwkacllib/lib64" in ld and f"{NNAE_PATH}/opp/op_impl/built-in/ai_core/tbe/op_tiling" in ld
    assert {"/usr/local/Ascend/driver/lib64", "/usr/local/Ascend/driver/lib64/common",
            "/usr/local/Ascend/driver/lib64/driver"} <= set(ld)
    path = env["PATH"].split(":")
    assert f"{NNAE_PATH}/fwkacllib/bin" in path and f"{NNAE_PATH}/fwkacllib/ccec_compiler/bin" in path
    assert path[0] == "/opt/conda/bin"  # the image's Python still comes first
    fwk = f"{NNAE_PATH}/fwkacllib/python/site-packages"
    assert env["FWK_PYTHON_PATH"] == fwk
    pp = env["PYTHONPATH"].split(":")
    assert {fwk, f"{fwk}/auto_tune.egg", f"{fwk}/schedule_search.egg", env["TBE_IMPL_PATH"]} <= set(pp)
    assert env["ASCEND_OPP_PATH"] == f"{NNAE_PATH}/opp" and env["ASCEND_AICPU_PATH"] == NNAE_PATH
    if alias.startswith("tensorflow"):
        assert pp[0] == "/usr/local/Ascend/tfplugin/latest/tfplugin/python/site-packages"


def test_ma_user_keeps_uid_1000_and_hwhiaiuser_is_moved_explicitly(tmp_path):
    """The step that makes the users, run against a passwd/group that has HwHiAiUser at uid 1000
    as Ascend's images do (useradd/groupadd --root, no host files touched)."""
    s = step(definition("mindspore-cann5.0.2"), "ma-user").script or ""
    assert "-u 1000 -g 100 -G HwHiAiUser" in s and "-u 1001 -g 1000" in s
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "home").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\nHwHiAiUser:x:1000:1000::/home/HwHiAiUser:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\nusers:x:100:\nHwHiAiUser:x:1000:\n")
    (root / "etc/shadow").write_text("root:*:1::::::\nHwHiAiUser:!:1::::::\n")
    (root / "etc/gshadow").write_text("root:*::\nusers:*::\nHwHiAiUser:!::\n")
    tools = ("useradd", "userdel", "groupadd", "groupdel", "getent")
    if os.geteuid() != 0 or any(subprocess.run(["which", t], capture_output=True).returncode for t in tools):
        pytest.skip("needs root and shadow's useradd (the image build runs this step as root)")
    # the same commands, told to work in `root` (getent reads the root's files)
    moved = s
    for t in ("useradd", "userdel", "groupadd", "groupdel"):
        moved = moved.replace(f"{t} ", f"{t} --root {root} ")
    moved = moved.replace("getent passwd", f"_getent {root}/etc/passwd").replace("getent group", f"_getent {root}/etc/group")
    prelude = "_getent() { awk -F: -v k=\"$2\" '$1==k || $3==k' \"$1\" | grep . ; }\n"
    subprocess.run(["sh", "-c", prelude + moved.replace("chmod 750 /home", f"chmod 750 {root}/home")], check=True,
                   timeout=60)
    passwd = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    group = {line.split(":")[0]: line.split(":") for line in (root / "etc/group").read_text().splitlines()}
    assert passwd["ma-user"][2:4] == ["1000", "100"] and passwd["HwHiAiUser"][2:4] == ["1001", "1000"]
    assert group["HwHiAiUser"][2] == "1000" and "ma-user" in group["HwHiAiUser"][3].split(",")


def test_the_cann_definition_rules_know_its_driver_and_python():
    t = tables()
    set_field(t, "platforms.toml/stack/cann-5.0.2/driver", "1.0.11.SCP001", "1.0.9")
    msg = refusal_of(t)
    assert "declares driver 1.0.9, but CANN 5.0.2 needs 1.0.11.SCP001 or later" in msg and "MindSpore 1.3.0" in msg


def test_the_cann_rules_refuse_a_python_its_adapters_do_not_support():
    t = tables()
    t["mindspore.toml"]["image"].append({
        "alias": "ms-cann-py39", "name": "mindspore_1.3.0-cann_5.0.2-py_3.9-euler_2.8.3-aarch64",
        "engine_version": "1.3.0", "python": "3.9", "os": "euleros-2.8", "accelerator": "cann-5.0.2", "arch": "aarch64"})
    t["platforms.toml"]["python"]["3.9-euleros-2.8"] = {
        "version": "3.9", "os": "euleros-2.8", "source": "url", "interpreter": "/opt/conda/bin/python3.9",
        "site_packages": "/opt/conda/lib/python3.9/site-packages"}
    msg = refusal_of(t)
    assert "ms-cann-py39" in msg and "CANN 5.0.2 supports Python ==3.7.*, not 3.9" in msg


def test_every_pin_says_its_trust_and_show_prints_it():
    """Every hash engines/ pins itself (files, vendor wheels, git, manual files, bases) carries its
    trust into build/; resolved ones (PyPI, Debian) are the index's and carry none."""
    m = load(ROOT)
    seen = set()
    for img in m.images:
        defn = definition(img.alias)
        locked = {(i.kind, i.name): i for i in defn.inputs()}
        for want in declared_inputs(img, m):
            if want.kind == "run":
                continue
            got = locked[(want.kind, want.name)]
            assert got.trust in ("vendor-published", "third-party", "recorded-on-first-use") and got.source, got.ref
            seen.add((got.name, got.trust))
        if defn.base:
            assert defn.base.trust in ("vendor-published", "third-party") and defn.base.source
    assert ("tensorflow", "third-party") in seen and ("mindspore-ascend", "vendor-published") in seen
    assert ("KungFu", "vendor-published") in seen and (NNAE, "recorded-on-first-use") in seen
    out = " ".join(cli("show", "tensorflow-cann5.0.2", check=True).stdout.split())
    assert "tensorflow 1.15.0 c2d6df0930f6" in out and "trust third-party: URL: Ascend/ascend-docker-image README" in out
    assert f"{NNAE} 5.0.2.1 awaiting 0 trust recorded-on-first-use" in out


def test_the_sbom_and_provenance_say_who_vouches_for_a_hash():
    from enginefab.publish import provenance, sbom

    defn = definition("tensorflow-cann5.0.2")
    pkgs = {p["name"]: p for p in json.loads(sbom.spdx_json(defn))["packages"]}
    assert "hash trust: third-party" in pkgs["tensorflow"]["comment"]
    assert "hash trust: vendor-published" in pkgs["Miniconda3-py37_4.10.3-Linux-aarch64.sh"]["comment"]
    assert "trust" not in pkgs["numpy"]["comment"]  # resolved from PyPI's index: no engines/ pin
    deps = provenance.statement(defn, "sha256:" + "0" * 64)["predicate"]["buildDefinition"]["resolvedDependencies"]
    (tf,) = [d for d in deps if d["name"] == "wheel:tensorflow==1.15.0"]
    assert tf["annotations"]["trust"] == "third-party" and tf["digest"]["sha256"].startswith("c2d6df09")
