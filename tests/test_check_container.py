"""How a check runs an image (no image needed): the config's user resolved as a container
runtime resolves it, the environment it adds, the entrypoint it puts first; and how a failing
probe is explained from what Python printed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from enginefab.check.container import DEFAULT_PATH, User, argv_of, environment, user_of
from enginefab.check.runtime import explain, printed, writable_result
from enginefab.core.errors import CheckError
from tests.conftest import demo_definition

PASSWD = """root:x:0:0:root:/root:/bin/bash
ma-user:x:1000:100::/home/ma-user:/bin/bash
# a comment
svc:x:998:998:service:/var/lib/svc:/usr/sbin/nologin
broken-line
"""
GROUP = """root:x:0:
users:x:100:
svc:x:998:
video:x:44:ma-user,svc
render:x:107:other,ma-user
"""


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(PASSWD)
    (tmp_path / "etc/group").write_text(GROUP)
    return tmp_path


def test_users_resolve_like_a_runtime(image_root):
    assert user_of(image_root, "1000:100") == User(1000, 100, (100, 44, 107), "/home/ma-user", "ma-user")
    assert user_of(image_root, "ma-user") == User(1000, 100, (100, 44, 107), "/home/ma-user", "ma-user")
    assert user_of(image_root, "svc:video") == User(998, 44, (44,), "/var/lib/svc", "svc")
    assert user_of(image_root, "4242") == User(4242, 0, (0,), "/", None)  # not in passwd: gid 0, home /
    assert user_of(image_root, "4242:4243").groups == (4243,)
    assert user_of(image_root, "") == User(0, 0, (0,), "/root", "root")


def test_unknown_names_and_ids_out_of_range_are_errors(image_root):
    with pytest.raises(CheckError, match="the image's user 'nobody' is not in its /etc/passwd"):
        user_of(image_root, "nobody", image="img")
    with pytest.raises(CheckError, match="the image's group 'wheel' is not in its /etc/group"):
        user_of(image_root, "1000:wheel")
    with pytest.raises(CheckError, match="out of range"):
        user_of(image_root, "4294967295")


def test_a_hostile_passwd_is_not_followed_out_of_the_image(image_root, tmp_path_factory):
    outside = tmp_path_factory.mktemp("host") / "passwd"
    outside.write_text("evil:x:1000:0::/root:/bin/sh\n")
    (image_root / "etc/passwd").unlink()
    (image_root / "etc/passwd").symlink_to(f"../../../../../../../../{outside}")
    assert user_of(image_root, "1000:100").name is None  # the link resolves inside the image: no file there


def test_environment_and_entrypoint_as_a_runtime_adds_them():
    u = User(1000, 100, (100,), "/home/ma-user", "ma-user")
    assert environment({"LANG": "C.UTF-8"}, u) == {"LANG": "C.UTF-8", "PATH": DEFAULT_PATH, "HOME": "/home/ma-user"}
    assert environment({"PATH": "/opt/bin", "HOME": "/x"}, u) == {"PATH": "/opt/bin", "HOME": "/x"}
    defn = demo_definition("demo-pytorch-x86_64")
    assert argv_of(defn, ["python3", "-c", "1"]) == ["python3", "-c", "1"]  # the demo has no entrypoint
    ep = defn.model_copy(update={"config": defn.config.model_copy(update={"entrypoint": ["/init", "--"]})})
    assert argv_of(ep, ["python3", "-c", "1"]) == ["/init", "--", "python3", "-c", "1"]
    assert argv_of(ep, ["python3"], entrypoint=False) == ["python3"]


def _stderr_of(code: str) -> str:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True).stderr


def test_explain_gives_the_exception_where_and_its_cause():
    err = _stderr_of("""
        import sys
        print("a warning before", file=sys.stderr)
        def inner():
            raise FileNotFoundError(2, "No usable temporary directory found in ['/tmp']")
        try:
            inner()
        except OSError as e:
            raise RuntimeError("the engine could not start") from e
    """)
    assert explain(err) == ("RuntimeError: the engine could not start\n  at <string>:9, in <module>\n"
                            "  caused by: FileNotFoundError: [Errno 2] No usable temporary directory found in ['/tmp']"
                            "\n    at <string>:5, in inner")


def test_explain_follows_a_chain_of_handling_and_causes():
    err = _stderr_of("""
        try:
            try:
                {}["key"]
            except KeyError:
                int("x")
        except ValueError as e:
            raise SystemError("third") from e
    """)
    text = explain(err)
    assert text.splitlines()[0] == "SystemError: third"
    assert "  caused by: ValueError: invalid literal for int() with base 10: 'x'" in text
    assert "  while handling: KeyError: 'key'" in text
    assert explain("Segmentation fault\n") is None


def test_what_the_probe_printed_and_where_it_could_write():
    out = ('ENGINEFAB-WRITABLE ["tmp", "/tmp", "ok"]\nENGINEFAB-WRITABLE ["shm", "/dev/shm", "ok"]\n'
           'ENGINEFAB-WRITABLE ["home", "/", "not the user\'s"]\nENGINEFAB-VERSION 1.0\nmatmul ok 22.0\nENGINEFAB-OK\n')
    assert printed(out) == "matmul ok 22.0"
    r = writable_result(out, 1000)
    assert r.status == "pass" and r.detail == "wrote to tmp /tmp, shm /dev/shm as uid 1000; home / is not the user's (not required)"
    bad = ('ENGINEFAB-WRITABLE ["tmp", "", "FileNotFoundError: No usable temporary directory found in [\'/tmp\']"]\n'
           'ENGINEFAB-WRITABLE ["shm", "/dev/shm", "PermissionError: [Errno 13] Permission denied"]\n')
    r = writable_result(bad, 1000)
    assert r.status == "fail"
    assert r.detail == ("as uid 1000, cannot write to tmp (none): FileNotFoundError: No usable temporary directory "
                        "found in ['/tmp']; shm /dev/shm: PermissionError: [Errno 13] Permission denied")
    assert writable_result("", 1000).status == "fail"
