"""`enginefab push` / `pull` / `referrers` on the built demo images against a real docker-registry,
confirmed by skopeo: graph order, HEAD-skips, cross-repository mounts, the multi-arch index,
SBOM / provenance / check report as referrers (fallback tag scheme), verified pulls."""

from __future__ import annotations

import json
import subprocess

import pytest
import requests

from enginefab.core import canonical, ocischema
from enginefab.core.definition import load_definition
from enginefab.publish import provenance, sbom
from enginefab.publish.referrers import REPORT_TYPE
from enginefab.publish.server import Registry, free_port
from enginefab.transport.client import RegistryClient, fallback_tag
from tests.conftest import OCI_SCHEMAS, ROOT, enginefab, validate_oci

pytestmark = pytest.mark.slow
ARM, X86 = "demo-pytorch-aarch64", "demo-pytorch-x86_64"
INDEX_TAG = "pytorch_1.8.0-py_3.9-debian_11"


def blobs_of(demo_build, alias: str) -> dict[str, int]:
    """digest → size of an image's config and layers, read from the built store."""
    store = demo_build["store"]
    raw = (store / "blobs" / "sha256" / demo_build["digests"][alias].split(":", 1)[1]).read_bytes()
    doc = json.loads(raw)
    return {d["digest"]: d["size"] for d in [doc["config"], *doc["layers"]]}


def skopeo(*args: str) -> str:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def pushes(demo_build, tmp_path_factory):
    """One registry, five pushes in order: aarch64 alone; x86_64 into a NEW repository; aarch64
    into that one too (on its own, as a per-arch CI runner would); both into the first
    repository; both again."""
    reg = Registry(root=tmp_path_factory.mktemp("push-registry"), port=free_port()).start()

    def push(*args: str, env: dict | None = None) -> dict:
        p = enginefab("push", *args, "--plain-http", "--store", str(demo_build["store"]), "--json", env=env,
                      check=True)
        return json.loads(p.stdout)

    fresh_cache = {"ENGINEFAB_CACHE": str(tmp_path_factory.mktemp("fresh-cache"))}  # as on a fresh CI runner
    steps = {
        "arm": push(ARM, "--to", f"{reg.host}/enginefab"),
        "x86_new_repo": push(X86, "--to", f"{reg.host}/x86team", env=fresh_cache),
        "arm_joins": push(ARM, "--to", f"{reg.host}/x86team"),  # the index over x86_64 already there
        "both": push(ARM, X86, "--to", f"{reg.host}/enginefab"),
        "again": push(ARM, X86, "--to", f"{reg.host}/enginefab"),
    }
    yield reg, steps
    reg.stop()


def test_second_push_uploads_nothing(pushes, demo_build):
    _, steps = pushes
    for step in ("both", "again"):
        assert {i["alias"]: i["digest"] for i in steps[step]["images"]} == demo_build["digests"]
    s = steps["again"]["stats"]
    assert s["uploaded_bytes"] == 0 and s["uploaded_blobs"] == 0 and s["referrer_bytes"] == 0
    assert s["skipped"] == s["blobs"] == len(blobs_of(demo_build, ARM)) + len(blobs_of(demo_build, X86))
    assert steps["again"]["indexes"] == steps["both"]["indexes"]
    first = steps["arm"]["stats"]
    assert first["uploaded_bytes"] == sum(blobs_of(demo_build, ARM).values())


def test_a_new_repository_uploads_only_what_the_registry_lacks(pushes, demo_build):
    _, steps = pushes
    arm, x86 = blobs_of(demo_build, ARM), blobs_of(demo_build, X86)
    shared = set(arm) & set(x86)
    assert shared, "the demos share layers (typing-extensions, the users layer)"
    s = steps["x86_new_repo"]["stats"]
    assert s["mounted"] == len(shared)
    assert s["uploaded_bytes"] == sum(size for d, size in x86.items() if d not in shared)
    # x86_64 into enginefab/pytorch afterwards: all of it is in the registry (x86team) → mounted
    s = steps["both"]["stats"]
    assert s["uploaded_bytes"] == 0 and s["mounted"] == len(set(x86) - shared)


def test_tags_and_graph(pushes, demo_build, matrix):
    reg, steps = pushes
    tags = set(requests.get(f"http://{reg.host}/v2/enginefab/pytorch/tags/list", timeout=5).json()["tags"])
    expect = {INDEX_TAG}
    for alias, digest in demo_build["digests"].items():
        expect |= {alias, matrix.get(alias).name, fallback_tag(digest)}
    assert tags == expect
    for img in steps["both"]["images"]:
        info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{img['reference']}"))
        assert info["Digest"] == img["digest"]


def test_index_resolves_per_platform(pushes, demo_build, tmp_path):
    reg, steps = pushes
    (idx,) = steps["both"]["indexes"]
    assert idx["tag"] == INDEX_TAG
    assert steps["arm"]["indexes"] == steps["x86_new_repo"]["indexes"] == []  # one arch so far: no index
    # aarch64 pushed on its own next to the x86_64 image already published: the same index, byte for byte
    (joined,) = steps["arm_joins"]["indexes"]
    assert joined["digest"] == idx["digest"] and joined["repository"] == "x86team/pytorch"
    assert steps["arm_joins"]["stats"]["uploaded_bytes"] == 0  # every aarch64 blob mounted
    ref = f"docker://{reg.host}/enginefab/pytorch:{INDEX_TAG}"
    raw = skopeo("inspect", "--tls-verify=false", "--raw", ref).encode()
    assert canonical.digest(raw) == idx["digest"]
    index = json.loads(raw)
    validate_oci(index, "image-index-schema.json")
    by_arch = {m["platform"]["architecture"]: m["digest"] for m in index["manifests"]}
    assert by_arch == {"arm64": demo_build["digests"][ARM], "amd64": demo_build["digests"][X86]}
    for arch, alias in (("arm64", ARM), ("amd64", X86)):
        info = json.loads(skopeo("inspect", "--tls-verify=false", "--override-arch", arch, ref))
        assert info["Architecture"] == arch
        layers = json.loads((demo_build["store"] / "blobs/sha256" / by_arch[arch][7:]).read_bytes())["layers"]
        assert info["Layers"] == [d["digest"] for d in layers]
    # skopeo copy of the arm64 member gives back our manifest, byte for byte
    skopeo("copy", "-q", "--src-tls-verify=false", "--override-arch", "arm64", ref, f"oci:{tmp_path / 'copy'}:x")
    copied = json.loads((tmp_path / "copy" / "index.json").read_text())["manifests"][0]
    assert copied["digest"] == demo_build["digests"][ARM]


def test_sbom_and_provenance_are_referrers(pushes, demo_build, root):
    reg, steps = pushes
    client = RegistryClient(reg.host, plain_http=True)
    for alias, digest in demo_build["digests"].items():
        img = next(i for i in steps["both"]["images"] if i["alias"] == alias)
        p = enginefab("referrers", img["reference"], "--plain-http", "--json", check=True)
        listed = json.loads(p.stdout)
        assert listed["subject"] == digest and listed["source"] == "fallback"
        by_type = {d["artifactType"]: d for d in listed["referrers"]}
        assert set(by_type) == {sbom.MEDIA_TYPE, provenance.MEDIA_TYPE}
        # the fallback tag holds a valid index listing each referrer once, after three pushes
        fb, _ = client.get_manifest_raw("enginefab/pytorch", fallback_tag(digest))
        validate_oci(json.loads(fb), "image-index-schema.json")
        assert len(json.loads(fb)["manifests"]) == 2
        defn = load_definition(root / "build" / f"{alias}.json")
        for atype, expected in ((sbom.MEDIA_TYPE, sbom.spdx_json(defn)),
                                (provenance.MEDIA_TYPE, provenance.statement_json(defn, digest))):
            raw, mt = client.get_manifest_raw("enginefab/pytorch", by_type[atype]["digest"])
            man = json.loads(raw)
            validate_oci(man, "image-manifest-schema.json")
            assert man["artifactType"] == atype and man["subject"]["digest"] == digest
            assert client.get_blob_bytes("enginefab/pytorch", man["layers"][0]["digest"]) == expected
        stmt = json.loads(provenance.statement_json(defn, digest))
        assert stmt["subject"][0]["digest"]["sha256"] == digest[7:]
        dep_digests = {d["digest"]["sha256"] for d in stmt["predicate"]["buildDefinition"]["resolvedDependencies"]}
        assert {i.sha256 for i in defn.inputs()} <= dep_digests


def test_the_sbom_is_valid_spdx_and_a_function_of_the_lock(root, tmp_path):
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    for alias in (ARM, X86):
        defn = load_definition(root / "build" / f"{alias}.json")
        raw = sbom.spdx_json(defn)
        assert raw == sbom.spdx_json(load_definition(root / "build" / f"{alias}.json"))
        (tmp_path / f"{alias}.spdx.json").write_bytes(raw)
        assert validate_full_spdx_document(parse_file(str(tmp_path / f"{alias}.spdx.json"))) == []
        doc = json.loads(raw)
        pkgs = {p["name"]: p for p in doc["packages"][1:]}
        inputs = [i for i in defn.inputs() if i.kind != "run"]
        assert len(doc["packages"]) - 1 == len(inputs)
        for i in inputs:
            p = pkgs[i.name]
            assert p["checksums"] == [{"algorithm": "SHA256", "checksumValue": i.sha256}]
            purl = p["externalRefs"][0]["referenceLocator"]
            assert purl.startswith({"deb": "pkg:deb/debian/", "wheel": "pkg:pypi/"}[i.kind])
        assert pkgs["torch"]["externalRefs"][0]["referenceLocator"] == "pkg:pypi/torch@1.8.0"


def test_check_report_is_attached_and_a_stale_one_refused(pushes, demo_build, tmp_path):
    reg, _ = pushes
    store = str(demo_build["store"])
    enginefab("check", ARM, "--level", "definition", "--level", "static", "--store", store,
              "--reports", str(tmp_path), check=True)
    report = (tmp_path / f"{ARM}.json").read_bytes()
    p = enginefab("push", ARM, "--to", f"{reg.host}/enginefab", "--plain-http", "--store", store,
                  "--reports", str(tmp_path), "--json", check=True)
    (img,) = json.loads(p.stdout)["images"]
    (rep,) = [r for r in img["referrers"] if r["artifactType"] == REPORT_TYPE]
    client = RegistryClient(reg.host, plain_http=True)
    man = json.loads(client.get_manifest_raw("enginefab/pytorch", rep["digest"])[0])
    assert client.get_blob_bytes("enginefab/pytorch", man["layers"][0]["digest"]) == report
    listed = json.loads(enginefab("referrers", f"{reg.host}/enginefab/pytorch:{INDEX_TAG}", "--platform",
                                  "linux/arm64", "--plain-http", "--json", check=True).stdout)
    assert {d["artifactType"] for d in listed["referrers"]} == {sbom.MEDIA_TYPE, provenance.MEDIA_TYPE, REPORT_TYPE}
    # a report about another digest is refused
    stale = json.loads(report)
    stale["digest"] = demo_build["digests"][X86]
    (tmp_path / f"{ARM}.json").write_bytes(canonical.dumps(stale))
    p = enginefab("push", ARM, "--to", f"{reg.host}/enginefab", "--plain-http", "--store", store,
                  "--reports", str(tmp_path))
    assert p.returncode == 2 and "not of" in p.stderr and "re-run `enginefab check" in p.stderr


def test_pull_a_platform_verifies_every_blob_and_refuses_a_tampered_one(pushes, demo_build, tmp_path):
    reg, _ = pushes
    ref = f"{reg.host}/enginefab/pytorch:{INDEX_TAG}"
    out = tmp_path / "pulled"
    p = enginefab("pull", ref, "--platform", "linux/arm64", "--out", str(out), "--plain-http", "--json", check=True)
    res = json.loads(p.stdout)
    assert res["digest"] == demo_build["digests"][ARM]
    assert res["blobs"] == len(blobs_of(demo_build, ARM))
    if OCI_SCHEMAS.is_dir():
        ocischema.validate_layout(out, OCI_SCHEMAS)
    entry = json.loads((out / "index.json").read_text())["manifests"][0]
    assert entry["digest"] == demo_build["digests"][ARM]
    info = json.loads(skopeo("inspect", f"oci:{out}:{INDEX_TAG}"))
    assert info["Architecture"] == "arm64"

    # flip one byte of a layer inside the registry's storage: the pull must refuse it
    layer = min((d for d in blobs_of(demo_build, ARM) if d not in blobs_of(demo_build, X86)),
                key=lambda d: blobs_of(demo_build, ARM)[d])
    data_file = reg.root / "data/docker/registry/v2/blobs/sha256" / layer[7:9] / layer[7:] / "data"
    good = data_file.read_bytes()
    try:
        data_file.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
        p = enginefab("pull", ref, "--platform", "linux/arm64", "--out", str(tmp_path / "again"), "--plain-http")
        assert p.returncode == 2
        assert f"blob {layer}" in p.stderr and "refused" in p.stderr and "tampered" in p.stderr
        assert not (tmp_path / "again" / "blobs" / "sha256" / layer[7:]).exists()
    finally:
        data_file.write_bytes(good)
