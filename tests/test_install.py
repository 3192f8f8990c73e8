"""What a user gets from `pip install .`: the package alone validates a layout (the OCI schemas are
package data), in a copy of the checkout with no ../shared beside it, run from outside it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _copy_checkout(dest):
    """The files a clone of this working tree has (tracked and new, not ignored: no .venv)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


@pytest.mark.slow
@pytest.mark.network  # pip may ask PyPI for the dependencies
def test_validate_works_after_pip_install_without_shared(demo_build, tmp_path):
    clone = tmp_path / "work" / "enginefab"
    _copy_checkout(clone)
    assert not (clone.parent / "shared").exists()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENGINEFAB_", "VIRTUAL_ENV", "PYTHON"))}
    p = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "."], cwd=clone, env=env,  # runs: self
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    shutil.rmtree(clone)  # nothing may be read from the checkout it was installed from
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import enginefab; print(enginefab.__file__)"],  # runs: self
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(venv))

    layout = tmp_path / "layout"
    shutil.copytree(demo_build["layout"], layout)
    ok = subprocess.run([str(venv / "bin" / "enginefab"), "validate", str(layout)], cwd=tmp_path, env=env,
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "valid" in ok.stdout + ok.stderr and "error" not in ok.stderr

    # the schemas are applied, not merely found: an index.json the image-spec forbids is refused
    index = json.loads((layout / "index.json").read_text())
    index["schemaVersion"] = 3
    (layout / "index.json").write_text(json.dumps(index))
    bad = subprocess.run([str(venv / "bin" / "enginefab"), "validate", str(layout)], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "image-index-schema.json" in bad.stderr and "Traceback" not in bad.stderr
