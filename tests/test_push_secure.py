"""Pushing for real where it gets hard: htpasswd + TLS with a self-signed CA, wrong passwords,
credentials from the environment, the docker config or a named target (never printed), and a
registry killed (SIGKILL) or stopped (SIGSTOP) in the middle of a push."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import requests

from enginefab.publish.server import Registry, free_port
from tests.conftest import ROOT, SECURE_PASSWORD, SECURE_USER, enginefab

pytestmark = pytest.mark.slow
ARM, X86 = "demo-pytorch-aarch64", "demo-pytorch-x86_64"
CREDS = {"ENGINEFAB_REGISTRY_USER": SECURE_USER, "ENGINEFAB_REGISTRY_PASSWORD": SECURE_PASSWORD}


def skopeo_inspect(ref: str, *args: str) -> dict:
    out = subprocess.run(["skopeo", "inspect", *args, f"docker://{ref}"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_push_over_tls_with_htpasswd(secure_registry, demo_build, matrix, tmp_path):
    host, ca = secure_registry.host, str(secure_registry.tls[0])
    store = str(demo_build["store"])
    p = enginefab("push", ARM, "--to", f"{host}/enginefab", "--ca-cert", ca, "--store", store, "--json", env=CREDS,
                  check=True)
    assert SECURE_PASSWORD not in p.stdout + p.stderr
    (img,) = json.loads(p.stdout)["images"]
    assert img["digest"] == demo_build["digests"][ARM]
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(ca, certs / "ca.crt")
    info = skopeo_inspect(img["reference"], "--cert-dir", str(certs), "--creds", f"{SECURE_USER}:{SECURE_PASSWORD}")
    assert info["Digest"] == img["digest"] and info["Architecture"] == "arm64"

    # TLS is verified by default: without the CA the push is refused, and says what to do
    p = enginefab("push", ARM, "--to", f"{host}/enginefab", "--store", store, env=CREDS)
    assert p.returncode == 2 and "TLS verification" in p.stderr and "--ca-cert" in p.stderr

    # a wrong password: refused in seconds, clearly, without echoing it
    t0 = time.monotonic()
    p = enginefab("push", ARM, "--to", f"{host}/enginefab", "--ca-cert", ca, "--store", store,
                  env={**CREDS, "ENGINEFAB_REGISTRY_PASSWORD": "hunter2-wrong"})
    assert time.monotonic() - t0 < 5
    assert p.returncode == 2 and f"rejected the password for user {SECURE_USER!r}" in p.stderr
    assert "hunter2-wrong" not in p.stdout + p.stderr
    # no credentials at all
    p = enginefab("push", ARM, "--to", f"{host}/enginefab", "--ca-cert", ca, "--store", store,
                  env={"DOCKER_CONFIG": str(tmp_path / "empty"), "ENGINEFAB_REGISTRY_USER": "",
                       "ENGINEFAB_REGISTRY_PASSWORD": ""})
    assert p.returncode == 2 and "requires a username and password" in p.stderr


def test_credentials_from_the_docker_config_and_a_named_target(secure_registry, demo_build, engines_copy, tmp_path):
    host, ca = secure_registry.host, str(secure_registry.tls[0])
    store = str(demo_build["store"])
    cfg = tmp_path / "docker"
    cfg.mkdir()
    auth = base64.b64encode(f"{SECURE_USER}:{SECURE_PASSWORD}".encode()).decode()
    (cfg / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    before = (cfg / "config.json").read_bytes()
    no_env = {"DOCKER_CONFIG": str(cfg), "ENGINEFAB_REGISTRY_USER": "", "ENGINEFAB_REGISTRY_PASSWORD": ""}
    p = enginefab("push", ARM, "--to", f"{host}/fromconfig", "--ca-cert", ca, "--store", store, "--json", env=no_env,
                  check=True)
    assert json.loads(p.stdout)["images"][0]["digest"] == demo_build["digests"][ARM]
    assert (cfg / "config.json").read_bytes() == before  # read, never written

    # a named target: where, how, and which variables hold the credentials (never the secret)
    (engines_copy / "registry").mkdir(exist_ok=True)
    (engines_copy / "registry" / "targets.toml").write_text(
        f'[targets.secure]\nregistry = "{host}"\nprefix = "team"\nca_cert = "{ca}"\n'
        'user_env = "TEAM_USER"\npassword_env = "TEAM_PASSWORD"\n')
    env = {"ENGINEFAB_ROOT": str(engines_copy), "TEAM_USER": SECURE_USER, "TEAM_PASSWORD": SECURE_PASSWORD,
           "DOCKER_CONFIG": str(tmp_path / "none"), "ENGINEFAB_REGISTRY_USER": "", "ENGINEFAB_REGISTRY_PASSWORD": ""}
    p = enginefab("push", ARM, "--to", "secure", "--store", store, "--json", env=env, check=True)
    res = json.loads(p.stdout)
    assert res["images"][0]["reference"].startswith(f"{host}/team/pytorch:")
    assert res["stats"]["uploaded_bytes"] == 0  # every layer mounted from fromconfig/pytorch
    out = tmp_path / "pulled"
    p = enginefab("pull", res["images"][0]["reference"], "--out", str(out), "--ca-cert", ca, "--json",
                  env={**CREDS, "DOCKER_CONFIG": str(tmp_path / "none")}, check=True)
    assert json.loads(p.stdout)["digest"] == demo_build["digests"][ARM]
    (engines_copy / "registry" / "targets.toml").write_text(
        f'[targets.leaky]\nregistry = "{host}"\npassword = "{SECURE_PASSWORD}"\n')
    p = enginefab("push", ARM, "--to", "leaky", "--store", store, env=env)
    assert p.returncode == 2 and "holds a secret" in p.stderr and SECURE_PASSWORD not in p.stderr


def _uploading_bytes(root) -> int:
    n = 0
    for dirpath, _, files in os.walk(root / "data/docker/registry/v2/repositories"):
        if "/_uploads/" in dirpath + "/":
            n += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files if f == "data")
    return n


def test_a_registry_killed_mid_push_leaves_no_dangling_tag_and_a_rerun_completes(demo_build, tmp_path):
    root, port = tmp_path / "registry", free_port()
    reg = Registry(root=root, port=port).start()
    store = str(demo_build["store"])
    args = [sys.executable, "-m", "enginefab", "push", X86, "--to", f"{reg.host}/enginefab", "--plain-http",
            "--store", store, "--json"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, ENGINEFAB_QUIET="1"))
    try:
        deadline = time.monotonic() + 120
        while _uploading_bytes(root) < 64 << 20:  # the 700 MB engine layer is streaming
            assert proc.poll() is None and time.monotonic() < deadline, "the push ended before we could kill"
            time.sleep(0.02)
        reg.kill()
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2 and "cannot reach" in json.loads(out)["error"]  # --json: the error on stdout

    reg = Registry(root=root, port=port).start()
    try:
        base = f"http://{reg.host}/v2/enginefab/pytorch"
        r = requests.get(f"{base}/tags/list", timeout=5)
        tags = r.json().get("tags") or [] if r.status_code == 200 else []
        for tag in tags:  # whatever tag exists must point at complete content
            man = requests.get(f"{base}/manifests/{tag}", timeout=5,
                               headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).json()
            for d in [man["config"], *man["layers"]]:
                assert requests.head(f"{base}/blobs/{d['digest']}", timeout=5).status_code == 200
        assert tags == []  # tags go last: the push died before any

        p = enginefab("push", X86, "--to", f"{reg.host}/enginefab", "--plain-http", "--store", store, "--json",
                      check=True)
        res = json.loads(p.stdout)
        assert res["stats"]["skipped"] >= 1  # what the first attempt finished is not sent again
        total = sum(d["size"] for d in [*_layers(demo_build, X86)])
        assert res["stats"]["uploaded_bytes"] < total
        info = skopeo_inspect(res["images"][0]["reference"], "--tls-verify=false")
        assert info["Digest"] == demo_build["digests"][X86]
    finally:
        reg.stop()


def test_a_registry_stopped_mid_push_fails_on_the_stall_timeout_and_a_rerun_completes(demo_build, tmp_path):
    """SIGSTOP the registry while the engine layer streams: the push ends with a clear error on
    the default stall timeout (not 3 attempts × 120 s, as it once did), and after SIGCONT a
    second push finishes the job."""
    root, port = tmp_path / "registry", free_port()
    reg = Registry(root=root, port=port).start()
    store = str(demo_build["store"])
    args = [sys.executable, "-m", "enginefab", "push", X86, "--to", f"{reg.host}/enginefab", "--plain-http",
            "--store", store, "--json"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, ENGINEFAB_QUIET="1"))
    try:
        deadline = time.monotonic() + 120
        while _uploading_bytes(root) < 64 << 20:
            assert proc.poll() is None and time.monotonic() < deadline, "the push ended before we could stop it"
            time.sleep(0.02)
        os.kill(reg.proc.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        out, _ = proc.communicate(timeout=120)
        took = time.monotonic() - t0
        os.kill(reg.proc.pid, signal.SIGCONT)
        err = json.loads(out)
        assert proc.returncode == 2 and took < 60, (proc.returncode, took)
        assert f"{reg.host} stopped taking blob sha256:" in err["error"] and "to enginefab/pytorch" in err["error"]
        assert "no progress for 10 s while sending" in err["error"] and "stuck or overloaded" in err["fix"]

        p = enginefab("push", X86, "--to", f"{reg.host}/enginefab", "--plain-http", "--store", store, "--json",
                      check=True)
        assert json.loads(p.stdout)["images"][0]["digest"] == demo_build["digests"][X86]
    finally:
        if proc.poll() is None:
            proc.kill()
        if reg.proc and reg.proc.poll() is None:
            os.kill(reg.proc.pid, signal.SIGCONT)
        reg.stop()


def _layers(demo_build, alias: str) -> list[dict]:
    raw = (demo_build["store"] / "blobs/sha256" / demo_build["digests"][alias][7:]).read_bytes()
    doc = json.loads(raw)
    return [doc["config"], *doc["layers"]]
