"""The multi-arch index: tag scheme, grouping rules, and the index written into an OCI layout
(validated with the OCI schemas, resolved per platform by skopeo)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess

import pytest

from enginefab.assemble.image import Built
from enginefab.assemble.index import add_to_layout, index_tag, plan_indexes
from enginefab.core import ocischema
from tests.conftest import OCI_SCHEMAS, validate_oci

ARM, X86 = "demo-pytorch-aarch64", "demo-pytorch-x86_64"


def fake_built(img, n: int) -> Built:
    """A stand-in for a built image: only its manifest digest and platform matter to planning."""
    return Built(img.name, img.alias, json.dumps({"n": n}).encode(), img.oci_platform, ())


def test_index_tag_drops_accelerator_and_arch(matrix):
    assert index_tag(matrix.get(X86)) == index_tag(matrix.get(ARM)) == "pytorch_1.8.0-py_3.9-debian_11"
    for img in matrix.images:
        if img.derived:  # its name is free-form: nothing to drop (one arch each, so no index)
            continue
        tag = index_tag(img)
        assert img.arch not in tag and (img.accelerator == "cpu" or f"{img.accelerator}_" not in tag)


def test_grouping_rules(matrix):
    arm, x86 = matrix.get(ARM), matrix.get(X86)
    plans, notes = plan_indexes([(x86, fake_built(x86, 1)), (arm, fake_built(arm, 2))])
    (p,) = plans
    assert [m.platform["architecture"] for m in p.members] == ["amd64", "arm64"] and not notes
    validate_oci(json.loads(p.raw), "image-index-schema.json")
    assert plan_indexes([(arm, fake_built(arm, 2))]) == ([], [])  # one arch: no index
    # a second x86_64 build of the same engine version (another CUDA) makes the platform ambiguous
    x86b = dataclasses.replace(x86, d=x86.d.model_copy(update={"alias": "other-x86"}))
    plans, notes = plan_indexes([(x86, fake_built(x86, 1)), (x86b, fake_built(x86b, 3)), (arm, fake_built(arm, 2))])
    assert plans == [] and "ambiguous" in notes[0] and "other-x86" in notes[0]


@pytest.mark.slow
def test_build_writes_the_index_into_the_layout_and_it_resolves_per_platform(demo_build, matrix, tmp_path):
    layout = demo_build["layout"]  # `enginefab build demo-pytorch-x86_64 demo-pytorch-aarch64 --out …`
    store = demo_build["store"]
    manifests = {alias: (store / "blobs/sha256" / digest[7:]).read_bytes()
                 for alias, digest in demo_build["digests"].items()}
    # the index `build` wrote is the one `push` plans from the same manifests
    plans, _ = plan_indexes([(matrix.get(a), Built(matrix.get(a).name, a, raw, matrix.get(a).oci_platform, ()))
                             for a, raw in manifests.items()])
    (plan,) = plans
    entries = {m["annotations"]["org.opencontainers.image.ref.name"]: m
               for m in json.loads((layout / "index.json").read_text())["manifests"]}
    assert entries[plan.tag]["digest"] == plan.digest and ARM in entries and X86 in entries
    ocischema.validate_layout(layout, OCI_SCHEMAS)
    for arch, alias in (("arm64", ARM), ("amd64", X86)):
        out = subprocess.run(["skopeo", "inspect", "--override-arch", arch, f"oci:{layout}:{plan.tag}"],
                             capture_output=True, text=True, check=True)
        info = json.loads(out.stdout)
        assert info["Architecture"] == arch
        assert info["Layers"] == [d["digest"] for d in json.loads(manifests[alias])["layers"]]
    # writing it again changes nothing (a rebuild into the same layout is idempotent)
    again = tmp_path / "again"
    shutil.copytree(layout, again, copy_function=os.link)  # add_to_layout replaces files, never edits
    add_to_layout(again, plans)
    assert (again / "index.json").read_bytes() == (layout / "index.json").read_bytes()
