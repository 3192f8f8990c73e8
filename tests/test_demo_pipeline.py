"""The walking skeleton on real content: the demo images build reproducibly, pass their checks,
and push to a real registry that independent tools (skopeo, umoci) read back."""

import json
import os
import subprocess

import pytest

from enginefab.core import ocischema
from tests.conftest import OCI_SCHEMAS, enginefab

pytestmark = pytest.mark.slow
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def test_rebuild_elsewhere_gives_the_same_digests(demo_build, demo_aliases, tmp_path):
    """Different store, output dir, umask, TZ, locale, file-creation order (every stager creates
    its files in reverse) and CPU count (one CPU instead of all): same manifest digests."""
    env = {"TZ": "Asia/Shanghai", "LANG": "zh_CN.UTF-8", "LC_ALL": "C"}
    old = os.umask(0o077)
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})  # the build inherits it: one CPU, one deflate thread
    try:
        p = enginefab("build", *reversed(demo_aliases), "--out", str(tmp_path / "elsewhere"),
                      "--store", str(tmp_path / "other-store"), "--json", "--creation-order", "reverse", env=env, check=True)
    finally:
        os.umask(old)
        os.sched_setaffinity(0, cpus)
    again = {r["alias"]: r["digest"] for r in json.loads(p.stdout)}
    assert again == demo_build["digests"]
    assert all(r["built"] > 0 and r["cached"] == 0 for r in json.loads(p.stdout) if r["alias"] == demo_aliases[-1])


def test_layout_is_valid_oci_and_read_by_skopeo_and_umoci(demo_build, matrix, tmp_path):
    layout = demo_build["layout"]
    assert ocischema.validate_layout(layout, OCI_SCHEMAS) >= 6
    for alias, digest in demo_build["digests"].items():
        img = matrix.get(alias)
        out = subprocess.run(["skopeo", "inspect", f"oci:{layout}:{alias}"], capture_output=True, text=True, check=True)
        info = json.loads(out.stdout)
        assert info["Digest"] == digest
        assert info["Architecture"] == ARCH[img.arch] and info["Os"] == "linux"
        assert info["Labels"]["org.opencontainers.image.title"] == img.name
        dest = tmp_path / alias
        subprocess.run(["umoci", "unpack", "--image", f"{layout}:{img.name}", str(dest)], check=True,
                       capture_output=True)
        site = dest / "rootfs/usr/local/lib/python3.9/dist-packages"
        assert (site / "torch-1.8.0.dist-info/RECORD").is_file()
        passwd = (dest / "rootfs/etc/passwd").read_text()
        assert "ma-user:x:1000:100::/home/ma-user:" in passwd


def test_checks_pass_on_the_demo_images(demo_build, demo_aliases):
    p = enginefab("check", *demo_aliases, "--store", str(demo_build["store"]), "--json")
    reports = json.loads(p.stdout)
    assert p.returncode == 0, p.stdout + p.stderr
    for rep in reports:
        runtime = [r for r in rep["results"] if r["level"] == "runtime"]
        assert runtime and all(r["status"] == "pass" for r in runtime)
        assert runtime[0]["data"]["version"].split("+")[0] == "1.8.0"
        accel = [r for r in rep["results"] if r["level"] == "accelerator"]
        assert accel and all(r["status"] == "skip" for r in accel)


def test_push_to_a_local_registry(demo_build, demo_aliases, matrix, registry):
    p = enginefab("push", *demo_aliases, "--to", f"{registry.host}/enginefab", "--plain-http",
                  "--store", str(demo_build["store"]), "--json", check=True)
    res = json.loads(p.stdout)
    assert res["stats"]["uploaded_bytes"] > 50_000_000
    for img in res["images"]:
        info = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{img['reference']}"],
                                         capture_output=True, text=True, check=True).stdout)
        assert info["Digest"] == demo_build["digests"][img["alias"]]
        assert info["Architecture"] == ARCH[matrix.get(img["alias"]).arch] and info["Os"] == "linux"
    again = json.loads(enginefab("push", *demo_aliases, "--to", f"{registry.host}/enginefab", "--plain-http",
                                 "--store", str(demo_build["store"]), "--json", check=True).stdout)
    assert again["stats"]["uploaded_bytes"] == 0
