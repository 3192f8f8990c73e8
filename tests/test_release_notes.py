"""`enginefab release` of the demos to a local registry: notes, page and record; a second run of
the same lock publishes nothing; the notes name exactly the pin that changed since the previous
lock; `--dry-run` writes nothing; `--tag` adds release tags. Reuses the session's demo build."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, enginefab

pytestmark = [pytest.mark.slow, pytest.mark.integration]  # builds on the demo images; a registry

X86, ARM = "demo-pytorch-x86_64", "demo-pytorch-aarch64"
LEVELS = ("--level", "definition", "--level", "static")


@pytest.fixture(scope="module")
def module_registry(tmp_path_factory):
    from enginefab.publish.server import Registry, free_port

    r = Registry(root=tmp_path_factory.mktemp("release-registry"), port=free_port()).start()
    yield r
    r.stop()


def _release(demo_build, registry, notes: Path, *extra: str, json_out: bool = True):
    p = enginefab("release", "--demo", "--to", f"{registry.host}/enginefab", "--plain-http",
                  "--store", str(demo_build["store"]), "--out", str(notes.parent / "layout"), *LEVELS,
                  "--notes", str(notes), *extra, *(("--json",) if json_out else ()), check=True)
    return json.loads(p.stdout) if json_out else p


def _storage(registry) -> dict[str, tuple[int, int]]:
    """Every file of the registry's storage with its size and mtime: what a write would change."""
    root = Path(registry.root)
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _section(notes: str, alias: str) -> str:
    return notes.split(f"## {alias}\n", 1)[1].split("\n## ", 1)[0]


@pytest.fixture(scope="module")
def first(demo_build, module_registry, tmp_path_factory):
    """The dry run against the empty registry, then the first release."""
    base = tmp_path_factory.mktemp("release")
    notes = base / "notes"
    dry = _release(demo_build, module_registry, notes, "--dry-run")
    catalog = requests.get(f"http://{module_registry.host}/v2/_catalog", timeout=10).json()["repositories"]
    rel = _release(demo_build, module_registry, notes, "--reports", str(base / "reports"))
    return {"dry": dry, "catalog_after_dry_run": catalog, "rel": rel, "notes": notes, "base": base,
            "record": (notes / "record.json").read_bytes(), "md": (notes / "NOTES.md").read_text(),
            "page": (notes / "index.html").read_bytes()}


def test_a_dry_run_says_what_would_be_pushed_and_writes_nothing(first, demo_build):
    dry = first["dry"]
    assert dry["ok"] and dry["stage"] == "dry-run" and dry["published"] is None
    rows = {r["alias"]: r for r in dry["dry_run"]}
    assert set(rows) == {X86, ARM}
    for alias, row in rows.items():
        assert row["to_build"] == []  # the session built them
        push = row["push"]
        assert push["digest"] == demo_build["digests"][alias]
        manifest = json.loads((demo_build["layout"] / "blobs" / "sha256" / push["digest"][7:]).read_bytes())
        assert push["blobs_missing"] == 1 + len(manifest["layers"])
        assert push["bytes_missing"] == manifest["config"]["size"] + sum(la["size"] for la in manifest["layers"])
        assert any(line.endswith(f":{alias} → {push['digest']}") for line in push["missing"]), push["missing"]
    assert first["catalog_after_dry_run"] == []


def test_the_first_release_writes_notes_page_and_a_record_without_transfer_counts(first, demo_build, module_registry):
    rel, md = first["rel"], first["md"]
    assert rel["published"] is True and rel["push"]["uploaded_bytes"] > 800_000_000  # the run's output has them
    record = json.loads(first["record"])
    assert "push" not in record and "seconds" not in record and "uploaded" not in first["record"].decode()
    assert record["lock"] == rel["lock"] and record["lock"] in md
    for img in record["images"]:
        assert img["digest"] == demo_build["digests"][img["alias"]]
        # the referrers the record names are the ones the registry lists for the image
        listed = json.loads(enginefab("referrers", img["reference"], "--plain-http", "--json", check=True).stdout)
        assert sorted(r["digest"] for r in listed["referrers"]) == sorted(r["digest"] for r in img["referrers"])
        section = _section(md, img["alias"])
        assert f"- digest: `{img['digest']}`" in section
        assert re.search(r"- size: [\d.]+ MB in 7 layers", section), section
        c = rel["checks"][img["alias"]]
        assert c["fail"] == 0
        n_def = sum(1 for r in json.loads((first["base"] / "reports" / f"{img['alias']}.json").read_text())["results"]
                    if r["level"] == "definition")
        assert f"  - definition: {n_def} passed" in section and "  - runtime: not run" in section
        assert "no previous release" in section
    assert "first release" in md and "## Multi-arch indexes" in md


def test_a_second_release_of_the_same_lock_publishes_nothing_and_says_so(first, demo_build, module_registry):
    before = _storage(module_registry)
    record = first["base"] / "again.json"
    p = _release(demo_build, module_registry, first["notes"], "--record", str(record), json_out=False)
    assert "already released" in p.stdout and "nothing published" in p.stdout, p.stdout
    assert _storage(module_registry) == before  # not one byte written to the registry
    assert record.read_bytes() == first["record"]
    notes = first["notes"]
    assert (notes / "record.json").read_bytes() == first["record"]
    assert (notes / "NOTES.md").read_text() == first["md"]
    assert (notes / "index.html").read_bytes() == first["page"]


def test_after_one_pin_changes_the_notes_name_that_pin_and_the_image_it_touched(first, demo_build, module_registry,
                                                                                  tmp_path):
    """The previous lock differs from this one in one wheel pin of the x86_64 image (a copy of
    build/ edited, nothing rebuilt): the notes name that pin for that image and nothing else."""
    prev = tmp_path / "prev"
    shutil.copytree(ROOT / "build", prev)
    path = prev / f"{X86}.json"
    defn = json.loads(path.read_text())
    [numpy] = [i for la in defn["layers"] for i in la.get("inputs", []) if i["name"] == "numpy"]
    numpy["version"], numpy["sha256"] = "1.21.5", "0" * 64
    path.write_text(json.dumps(defn))
    notes = first["notes"]
    _release(demo_build, module_registry, notes, "--since", str(prev))
    md = (notes / "NOTES.md").read_text()
    x86, arm = _section(md, X86), _section(md, ARM)
    pins = re.findall(r"^  - `(.*)`$", x86, re.M)
    assert pins == ["numpy 1.21.5 → 1.21.6"], x86
    assert "- pins changed: none" in arm and "numpy" not in arm, arm
    [row] = [line for line in md.splitlines() if line.startswith(f"| `{X86}`")]
    assert "numpy 1.21.5 → 1.21.6" in row
    [row] = [line for line in md.splitlines() if line.startswith(f"| `{ARM}`")]
    assert "no pin changed" in row


def test_a_release_tag_publishes_only_the_new_tags(first, demo_build, module_registry):
    rel = _release(demo_build, module_registry, first["notes"], "--tag", "2026.12")
    assert rel["published"] is True
    assert sorted(rel["pending"]) == sorted(
        [f"enginefab/pytorch:{a}-2026.12 → {demo_build['digests'][a]}" for a in (X86, ARM)]
        + [f"enginefab/pytorch:{x['tag']}-2026.12 → {x['digest']} (index)" for x in rel["indexes"]])
    assert rel["push"]["uploaded_bytes"] == 0
    for a in (X86, ARM):
        r = requests.head(f"http://{module_registry.host}/v2/enginefab/pytorch/manifests/{a}-2026.12", timeout=10,
                          headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert r.headers["Docker-Content-Digest"] == demo_build["digests"][a]
    bad = enginefab("release", "--demo", "--to", f"{module_registry.host}/enginefab", "--plain-http",
                    "--store", str(demo_build["store"]), "--tag", "no/slash", "--dry-run")
    assert bad.returncode == 2 and "--tag" in bad.stderr and "Traceback" not in bad.stderr


def test_the_release_page_in_chromium_shows_every_image_and_its_check_status(first, tmp_path):
    from tests.browser import badges, dump_dom, green_bands, screenshot

    page = first["notes"] / "index.html"
    rel = first["rel"]
    dom = dump_dom(page)
    status = badges(dom)
    for img in rel["images"]:
        a = img["alias"]
        assert status[(a, "all")] == "pass" and status[(a, "definition")] == "pass"
        assert status[(a, "static")] == "pass" and status[(a, "runtime")] == "none"
        assert img["digest"][:19] in dom and a in dom
    png = screenshot(page, tmp_path / "page.png")
    bands = green_bands(png)
    # the summary table: one band per image, each with a green badge for the image and for each
    # level that passed (definition, static); nothing red anywhere
    assert [n for n, _ in bands[:len(rel["images"])]] == [3] * len(rel["images"]), bands
    assert png.count_colour((0xCF, 0x22, 0x2E)) == 0


def test_the_page_of_a_failed_check_is_red_in_chromium(first, demo_build, tmp_path):
    """The same page with one check result of the aarch64 image turned into a failure."""
    from tests.browser import badges, dump_dom, green_bands, screenshot

    from enginefab.release.page import html

    doc = _document_of(first, demo_build["store"])
    [arm] = [i for i in doc["images"] if i["alias"] == ARM]
    arm["checks"]["static"]["pass"] -= 1
    arm["checks"]["static"]["fail"] += 1
    arm["checks"]["static"]["failed"].append("glibc: GLIBC_2.99 needed")
    arm["status"] = "fail"
    page = tmp_path / "failed.html"
    page.write_text(html(doc))
    status = badges(dump_dom(page))
    assert status[(ARM, "all")] == "fail" and status[(ARM, "static")] == "fail" and status[(X86, "all")] == "pass"
    png = screenshot(page, tmp_path / "failed.png")
    assert [n for n, _ in green_bands(png)[:2]] == [3, 1]
    assert png.count_colour((0xCF, 0x22, 0x2E)) > 1000


def _document_of(first, store: Path) -> dict:
    """The release document `enginefab report` makes of the released images (its --json)."""
    rec = first["notes"] / "record.json"
    out = first["base"] / "report.html"
    p = enginefab("report", "--demo", "--store", str(store), "--reports", str(first["base"] / "reports"),
                  "--record", str(rec), "--plain-http", "--out", str(out), "--json", check=True)
    return json.loads(p.stdout)


def test_enginefab_report_writes_the_same_page_from_the_store_and_reports(first, demo_build, tmp_path):
    from tests.browser import badges, dump_dom

    doc = _document_of(first, demo_build["store"])
    page = first["base"] / "report.html"
    status = badges(dump_dom(page))
    for img in first["rel"]["images"]:
        assert status[(img["alias"], "all")] == "pass"
        [d] = [i for i in doc["images"] if i["alias"] == img["alias"]]
        assert d["digest"] == img["digest"] and [r["digest"] for r in d["referrers"]] == \
            [r["digest"] for r in img["referrers"]]
        assert all(r["url"].startswith("http://") for r in d["referrers"])
    shared = [la for i in doc["images"] for la in i["layers"] if la["shared_with"]]
    assert shared and all(la["kind"] in ("wheels", "files") for la in shared)
