"""`enginefab lock` failures a user meets, on real content: each gives one clear error naming the
image, the input and the fix, and leaves build/ exactly as it was (no partial lock file).

The apt cases serve the real Debian bullseye index from a local HTTP mirror (registry/mirrors.toml
rewrite), altered or truncated; the PyPI cases ask the real index for what it does not have, or
an index on a closed loopback port."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from enginefab.publish.server import free_port as closed_port  # released at once: nothing listens
from tests.conftest import enginefab, session_for, verified_entries

pytestmark = pytest.mark.network  # each case locks the demos, whose apt and PyPI parts resolve online

SUITE = "https://deb.debian.org/debian"
ARM64_INDEX = "main/binary-arm64/Packages.xz"


@pytest.fixture(scope="module")
def bullseye():
    """The real InRelease of bullseye and its arm64 Packages.xz (from the download cache)."""
    from enginefab.transport import download

    session = session_for()
    inrelease = download.get_bytes(f"{SUITE}/dists/bullseye/InRelease", session, label="bullseye InRelease")
    entries = verified_entries(inrelease)
    sha, size = entries[ARM64_INDEX]
    path = download.fetch(download.Want(url=f"{SUITE}/dists/bullseye/{ARM64_INDEX}", sha256=sha, size=size), session)
    return {"inrelease": inrelease, "packages": path.read_bytes(), "sha256": sha, "size": size}


def snapshot(proj: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((proj / "build").iterdir())}


def lock_json(proj: Path, *names: str, env: dict | None = None):
    p = enginefab("lock", *names, "--json", cwd=proj, env=env, timeout=300)
    assert p.returncode == 2, p.stdout + p.stderr
    return json.loads(p.stdout)


def edit_image(proj: Path, file: str, alias: str, old: str, new: str) -> None:
    """Replace the first `old` after the image's alias line in engines/<file>."""
    path = proj / "engines" / file
    text = path.read_text()
    at = text.index(f'alias = "{alias}"')
    assert old in text[at:], f"{old!r} not in {alias}"
    path.write_text(text[:at] + text[at:].replace(old, new, 1))


def apt_mirror(proj: Path, mirror, bullseye, packages: bytes) -> dict:
    """Point the Debian archive at `mirror`, serving the real InRelease and `packages`; a fresh
    download cache so the index really comes from the mirror."""
    (proj / "registry" / "mirrors.toml").write_text(
        f'[[rewrite]]\nfrom = "{SUITE}/"\nto = "{mirror.url}/debian/"\n')
    mirror.put("debian/dists/bullseye/InRelease", bullseye["inrelease"])
    mirror.put(f"debian/dists/bullseye/{ARM64_INDEX}", packages)
    return {"ENGINEFAB_CACHE": str(proj.parent / "fresh-cache")}


def test_a_download_whose_sha256_differs_is_refused(engines_copy, http_mirror, bullseye):
    before = snapshot(engines_copy)
    altered = bytearray(bullseye["packages"])
    altered[len(altered) // 2] ^= 0xFF  # one flipped byte, same size
    env = apt_mirror(engines_copy, http_mirror, bullseye, bytes(altered))
    err = lock_json(engines_copy, "demo-pytorch-aarch64", env=env)
    assert err["image"].startswith("demo-pytorch-aarch64")
    assert err["input"] == f"bullseye {ARM64_INDEX}"
    assert f"the pin says {bullseye['sha256']}" in err["error"]
    assert "re-run `enginefab lock`" in err["fix"] and "mirror" in err["fix"]
    assert http_mirror.asked(ARM64_INDEX), "the index did not come from the mirror"
    assert snapshot(engines_copy) == before


def test_a_truncated_download_is_refused(engines_copy, http_mirror, bullseye):
    before = snapshot(engines_copy)
    half = bullseye["packages"][: bullseye["size"] // 2]
    env = apt_mirror(engines_copy, http_mirror, bullseye, half)
    err = lock_json(engines_copy, "demo-pytorch-aarch64", env=env)
    assert err["image"].startswith("demo-pytorch-aarch64")
    assert err["input"] == f"bullseye {ARM64_INDEX}"
    assert f"gave {len(half)} bytes, the pin says {bullseye['size']} (truncated download)" in err["error"]
    assert err["fix"]
    assert snapshot(engines_copy) == before
    # nothing half-downloaded is left in the cache either
    cache = engines_copy.parent / "fresh-cache" / "downloads"
    assert not (cache / "sha256" / bullseye["sha256"]).exists()
    assert not list((cache / "tmp").glob("*")) if (cache / "tmp").is_dir() else True


def test_an_unknown_package_is_named(engines_copy):
    before = snapshot(engines_copy)
    edit_image(engines_copy, "pytorch.toml", "demo-pytorch-aarch64", 'requirements = ["torch==1.8.0"]',
               'requirements = ["enginefab-no-such-package==1.0", "torch==1.8.0"]')
    err = lock_json(engines_copy, "demo-pytorch-aarch64")
    assert err["image"].startswith("demo-pytorch-aarch64")
    assert err["input"] == "enginefab-no-such-package"
    assert "no project 'enginefab-no-such-package' on https://pypi.org/simple" in err["error"]
    assert "spelling" in err["fix"]
    assert snapshot(engines_copy) == before


def test_a_version_that_does_not_exist_lists_the_ones_that_do(engines_copy):
    before = snapshot(engines_copy)
    edit_image(engines_copy, "pytorch.toml", "demo-pytorch-aarch64", '"torch==1.8.0"', '"torch==1.8.7"')
    err = lock_json(engines_copy, "demo-pytorch-aarch64")
    assert err["image"].startswith("demo-pytorch-aarch64")
    assert err["input"] == "torch==1.8.7"
    assert "torch has no version matching ==1.8.7" in err["error"]
    shown = err["error"].split("(it has: ", 1)[1]
    assert "1.8.0" in shown and "1.8.1" in shown
    assert "pin a version the index has" in err["fix"]
    assert snapshot(engines_copy) == before


def test_an_unreachable_index_fails_fast(engines_copy):
    before = snapshot(engines_copy)
    port = closed_port()
    (engines_copy / "registry" / "mirrors.toml").write_text(f'[pypi]\nindex = "http://127.0.0.1:{port}/simple"\n')
    t0 = time.monotonic()
    err = lock_json(engines_copy, "demo-pytorch-aarch64")
    took = time.monotonic() - t0
    assert err["image"].startswith("demo-pytorch-aarch64") and err["input"] == "torch"
    assert f"cannot reach http://127.0.0.1:{port}/simple/torch/ (Connection refused)" in err["error"]
    assert "mirrors.toml" in err["fix"]
    assert took < 60, f"an unreachable index took {took:.0f} s to report"
    assert snapshot(engines_copy) == before


def test_when_the_second_image_fails_the_first_is_not_written(engines_copy):
    """All or nothing: the x86_64 demo's definition must change (its engines/ entry did), but the
    aarch64 demo fails, so neither file is written and both stay stale for `lock --check`."""
    before = snapshot(engines_copy)
    edit_image(engines_copy, "pytorch.toml", "demo-pytorch-x86_64", 'description = "', 'description = "changed: ')
    edit_image(engines_copy, "pytorch.toml", "demo-pytorch-aarch64", '"torch==1.8.0"', '"torch==1.8.7"')
    err = lock_json(engines_copy, "demo-pytorch-x86_64", "demo-pytorch-aarch64")
    assert err["image"].startswith("demo-pytorch-aarch64")
    assert snapshot(engines_copy) == before
    res = json.loads(enginefab("lock", "--check", "--json", cwd=engines_copy).stdout)
    stale = {x.split(":", 1)[0] for x in res["problems"]}
    # and the image derived from the x86_64 demo, whose parent changed
    assert stale == {"demo-pytorch-x86_64", "demo-pytorch-aarch64", "demo-model-x86_64"}
    assert any("image.description" in x for x in res["problems"] if x.startswith("demo-pytorch-x86_64"))


def test_every_image_that_fails_is_named_at_once(engines_copy):
    before = snapshot(engines_copy)
    edit_image(engines_copy, "pytorch.toml", "demo-pytorch-x86_64", '"torch==1.8.0"', '"torch==1.8.7"')
    edit_image(engines_copy, "pytorch.toml", "demo-pytorch-aarch64", 'requirements = ["torch==1.8.0"]',
               'requirements = ["enginefab-no-such-package==1.0", "torch==1.8.0"]')
    err = lock_json(engines_copy, "demo-pytorch-x86_64", "demo-pytorch-aarch64")
    assert err["error"].startswith("2 images could not be locked (nothing was written)")
    first, second = err["error"].split("\n  2. ")
    assert "image demo-pytorch-x86_64" in first and "torch has no version matching ==1.8.7" in first
    assert "image demo-pytorch-aarch64" in second and "no project 'enginefab-no-such-package'" in second
    assert snapshot(engines_copy) == before
