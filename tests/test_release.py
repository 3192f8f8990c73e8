"""`enginefab release`: lock --check → build → check → push, each stage gated on the one before."""

from __future__ import annotations

import json

import requests

from tests.conftest import enginefab

AARCH64 = "demo-pytorch-aarch64"


def _catalog(registry) -> list[str]:
    r = requests.get(f"http://{registry.host}/v2/_catalog", timeout=10)
    r.raise_for_status()
    return r.json()["repositories"]


def test_release_checks_then_pushes_with_the_check_report_attached(demo_build, registry, tmp_path):
    record = tmp_path / "release.json"
    p = enginefab("release", AARCH64, "--to", f"{registry.host}/enginefab", "--plain-http",
                  "--store", str(demo_build["store"]), "--out", str(tmp_path / "layout"),
                  "--level", "definition", "--level", "static", "--record", str(record), "--json", check=True)
    rel = json.loads(p.stdout)
    assert rel["ok"] and rel["stage"] == "push"
    [img] = rel["images"]
    assert img["digest"] == demo_build["digests"][AARCH64]
    assert rel["checks"][AARCH64]["fail"] == 0 and rel["checks"][AARCH64]["pass"] > 0
    # the report this run produced is what the registry now holds as a referrer of the image
    refs = json.loads(enginefab("referrers", img["reference"], "--plain-http", "--json", check=True).stdout)
    kinds = sorted(r["artifactType"] for r in refs["referrers"])
    assert kinds == sorted(["application/spdx+json", "application/vnd.in-toto+json",
                            "application/vnd.enginefab.check.report.v1+json"]), kinds
    saved = record.read_bytes()
    assert json.loads(saved)["images"][0]["digest"] == img["digest"]
    assert saved == json.dumps(json.loads(saved), sort_keys=True, separators=(",", ":")).encode() + b"\n"


def test_a_failing_check_pushes_nothing(demo_build, registry, engines_copy, tmp_path):
    checks = engines_copy / "engines" / "checks" / "pytorch.yaml"
    text = checks.read_text()
    assert "^__version__ = '{{framework_version}}'$" in text
    checks.write_text(text.replace("^__version__ = '{{framework_version}}'$", "^__version__ = '9.9.9'$"))
    p = enginefab("release", AARCH64, "--to", f"{registry.host}/enginefab", "--plain-http",
                  "--store", str(demo_build["store"]), "--out", str(tmp_path / "layout"),
                  "--level", "static", cwd=engines_copy)
    assert p.returncode == 1, p.stderr
    assert "release stopped at check" in p.stderr and "torch-version" in p.stderr, p.stderr
    assert _catalog(registry) == []


def test_a_stale_lock_builds_and_pushes_nothing(registry, engines_copy, tmp_path):
    toml = engines_copy / "engines" / "pytorch.toml"
    text = toml.read_text()
    head, sep, tail = text.rpartition('"numpy>=1.17,<1.22"')  # the last image: the aarch64 demo
    assert sep
    toml.write_text(head + '"numpy>=1.17,<1.21"' + tail)
    store = tmp_path / "store"
    p = enginefab("release", AARCH64, "--to", f"{registry.host}/enginefab", "--plain-http",
                  "--store", str(store), "--out", str(tmp_path / "layout"), "--json", cwd=engines_copy)
    assert p.returncode == 1
    rel = json.loads(p.stdout)
    assert rel["stage"] == "lock" and not rel["ok"]
    assert any(AARCH64 in problem and "numpy" in problem for problem in rel["problems"]), rel["problems"]
    assert not (tmp_path / "layout").exists() and _catalog(registry) == []
