"""The static audit reads an image's own files by name (passwd, dist-info METADATA, ld.so.conf.d,
evidence files, DT_NEEDED paths). The image is hostile: its symlinks must resolve inside the
image, as under chroot — never to the host. Both resolvers are tested: the kernel's
openat2(RESOLVE_IN_ROOT) and the user-space walk used where the kernel lacks it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from enginefab.core import beneath
from enginefab.check.inventory import scan

SP = "/usr/local/lib/python3.9/site-packages"
SECRET = "ma-user:x:1000:100:HOST SECRET:/home/ma-user:/bin/bash\n"


@pytest.fixture(params=["openat2", "walk"])
def resolver(request, monkeypatch):
    if request.param == "openat2":
        if not beneath.openat2_available():
            pytest.skip("this kernel has no openat2: only the user-space resolver can be tested here")
    else:
        monkeypatch.setattr(beneath, "_have_openat2", [False])
    return request.param


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    host = tmp_path / "host"
    host.mkdir()
    secret = host / "secret"
    secret.write_text(SECRET)
    (host / "ld.conf").write_text("/host-only-lib\n")
    root = tmp_path / "root"
    (root / "etc" / "ld.so.conf.d").mkdir(parents=True)
    (root / "home" / "ma-user").mkdir(parents=True)
    return root, secret


def test_symlinks_to_the_host_are_not_followed(tmp_path, resolver):
    root, secret = _tree(tmp_path)
    depth = "../" * (len(root.parts) + 2)
    os.symlink(str(secret), root / "etc" / "passwd")  # absolute: the host's path
    os.symlink(f"{depth}{secret.parent / 'ld.conf'}", root / "etc" / "ld.so.conf.d" / "evil.conf")  # climbs out
    di = root / SP.lstrip("/") / "evil-1.0.dist-info"
    di.mkdir(parents=True)
    os.symlink(f"{depth}{str(secret).lstrip('/')}", di / "METADATA")
    os.symlink(str(secret), root / "evidence")
    os.symlink(str(secret.parent), root / "home-link")
    inv = scan(root, site_packages=SP, home="/home-link", evidence=[("/evidence", "HOST SECRET")])
    assert inv.passwd == ()  # /etc/passwd names the image's file, which does not exist
    assert inv.ld_conf_dirs == ()
    assert [(d.dirname, d.name, d.version) for d in inv.dists] == [("evil-1.0.dist-info", None, None)]
    assert inv.evidence == frozenset()
    assert not inv.home.is_dir  # the image's /home-link points at a host directory the image lacks


def test_symlinks_inside_the_image_are_followed(tmp_path, resolver):
    root, _ = _tree(tmp_path)
    (root / "usr" / "lib").mkdir(parents=True)
    (root / "usr" / "lib" / "ld.so").write_bytes(b"x")
    os.symlink("usr/lib", root / "lib")  # merged /usr
    (root / "usr" / "share").mkdir()
    (root / "usr" / "share" / "passwd").write_text("ma-user:x:1000:100::/home/ma-user:/bin/bash\n")
    os.symlink("/usr/share/passwd", root / "etc" / "passwd")  # absolute: the image's root
    (root / "etc" / "ld.so.conf.d" / "a.conf").write_text("/opt/lib # a comment\n")
    (root / "loop1").symlink_to("loop2")
    (root / "loop2").symlink_to("loop1")
    (root / "escape").symlink_to("../../../../../../../usr/share/passwd")  # '..' stops at the image's root
    inv = scan(root, site_packages=SP, home="/home/ma-user",
               evidence=[("/escape", "ma-user"), ("/loop1", "x")])
    assert inv.passwd == (("ma-user", "x", "1000", "100", "", "/home/ma-user", "/bin/bash"),)
    assert inv.ld_conf_dirs == ("/opt/lib",)
    assert inv.evidence == frozenset({("/escape", "ma-user")})
    assert inv.home.is_dir
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert beneath.resolve_in_root(fd, "/lib/ld.so") == "usr/lib/ld.so"
        with pytest.raises(beneath.Blocked):
            beneath.resolve_in_root(fd, "/loop1")
        with pytest.raises(beneath.Blocked):
            os.close(beneath.open_in_root(fd, "/loop1"))
        os.close(beneath.open_in_root(fd, "/lib/ld.so"))
    finally:
        os.close(fd)


def test_a_revision_shaped_like_an_option_never_reaches_git_as_one(tmp_path):
    import subprocess

    from enginefab.assemble.churn import read_lock
    from enginefab.core.errors import BuildError

    subprocess.run(["git", "init", "-q", str(tmp_path / "p")], check=True)
    victim = tmp_path / "written-by-git"
    for rev in (f"--output={victim}", "-h", ""):
        with pytest.raises(BuildError) as e:
            read_lock("@" + rev, tmp_path / "p")
        assert "not a revision" in str(e.value)
    assert not victim.exists()
    with pytest.raises(BuildError) as e:  # a well-formed revision that is not there
        read_lock("@no-such-branch", tmp_path / "p")
    assert "rev-parse" in str(e.value)
