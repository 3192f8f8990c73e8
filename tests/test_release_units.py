"""The release's pure parts, without building: which lock the notes compare with, release tags,
and a page that shows hostile check details as text."""

from __future__ import annotations

import json

import pytest

from enginefab.assemble.store import Store
from enginefab.core.definition import Definition
from enginefab.core.errors import MatrixError
from enginefab.release import history
from enginefab.release.dryrun import layers_to_build, lines
from enginefab.release.notes import markdown
from enginefab.release.page import html
from enginefab.release.plan import check_release_tag, lock_digest
from tests.conftest import ROOT, demo_definition


def _lock(numpy: str | None = None) -> dict:
    out = {}
    for alias in ("demo-pytorch-x86_64", "demo-pytorch-aarch64"):
        d = json.loads(demo_definition(alias).to_json())
        for la in d["layers"] if numpy else []:
            for i in la.get("inputs", []):
                if i["name"] == "numpy":
                    i["version"] = numpy
        out[alias] = Definition.model_validate(d)
    return out


def test_the_notes_compare_with_the_previous_lock_and_a_rerun_with_the_same_one(tmp_path):
    notes = tmp_path / "notes"
    one, two = _lock("1.21.5"), _lock()
    assert history.previous(notes, one, None, ROOT) is None  # first release
    history.remember(notes, one, None)
    old = history.previous(notes, two, None, ROOT)  # a new lock: the previous is the one kept
    assert lock_digest(list(old.values())) == lock_digest(list(one.values()))
    history.remember(notes, two, old)
    again = history.previous(notes, two, None, ROOT)  # the same lock again: the same previous one
    assert lock_digest(list(again.values())) == lock_digest(list(one.values()))
    # --since names it explicitly; only the images released now are compared
    only = history.previous(notes, {"demo-pytorch-x86_64": two["demo-pytorch-x86_64"]}, str(ROOT / "build"), ROOT)
    assert list(only) == ["demo-pytorch-x86_64"]


def test_a_release_tag_must_make_valid_tags():
    check_release_tag("2026.12", "demo-pytorch-aarch64")
    for bad in ("a/b", "-x", "x" * 120, "", "v1 "):
        with pytest.raises(MatrixError, match="--tag|release tag"):
            check_release_tag(bad, "demo-pytorch-aarch64")


def _doc(detail: str) -> dict:
    level = {"pass": 1, "fail": 1, "skip": 0, "error": 0, "failed": [detail]}
    img = {"alias": "demo-pytorch-x86_64", "name": "n", "platform": "linux/amd64", "digest": "sha256:" + "a" * 64,
           "size": 10, "layers": [{"id": "l", "kind": "wheels", "digest": "sha256:" + "b" * 64, "size": 10,
                                   "shared_with": []}],
           "checks": {"static": level}, "status": "fail", "tags": [], "reference": None,
           "referrers": [{"kind": "SBOM", "digest": "sha256:" + "c" * 64, "url": "http://h/v2/r/manifests/x\"y"}],
           "changes": None}
    return {"title": "t", "lock": "sha256:" + "d" * 64, "since": None, "registry": None, "tag": None,
            "images": [img], "indexes": [],
            "totals": {"images": 1, "layers": 1, "unique_layers": 1, "sum_of_images": 10, "unique_bytes": 10}}


def test_hostile_check_details_are_text_on_the_page_and_in_the_notes():
    detail = 'glibc: <script>alert(1)</script> | "x"'
    page = html(_doc(detail))
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'href="http://h/v2/r/manifests/x&quot;y"' in page
    md = markdown(_doc(detail))
    assert "- ✗ `glibc: <script>alert(1)</script> \\| \"x\"`" in md  # code, not HTML; no cell broken out of
    assert "static: 1 passed, 1 failed" in md


def test_a_dry_run_of_an_image_not_built_lists_every_layer_it_would_pack(tmp_path):
    defn = demo_definition("demo-pytorch-aarch64")
    rows = layers_to_build(defn, Store(tmp_path / "store"))
    assert [r["id"] for r in rows] == [la.id for la in defn.layers] and not any(r["cached"] for r in rows)
    text = lines([{"alias": "demo-pytorch-aarch64", "layers": len(rows), "to_build": [r["id"] for r in rows],
                   "push": None}], "127.0.0.1:5000/enginefab")
    assert text[0].startswith(f"demo-pytorch-aarch64: build {len(rows)} of {len(rows)} layers: {defn.layers[0].id}")
    assert "push: everything" in text[1]
