"""How a sandbox is put together, without running one: the bubblewrap arguments of a run step
and of a check (what is bound, what is cut, what is dropped), the binfmt_misc registration of
qemu-user, and a host's own registration recognized (older kernels)."""

from __future__ import annotations

from pathlib import Path

import pytest

from enginefab.assemble import sandbox


def _args(sb: sandbox.Sandbox, new_root: Path) -> list[str]:
    return sandbox._bwrap_args(sb, new_root, seccomp_fd=7)


def _pairs(args: list[str], flag: str) -> list[tuple[str, str]]:
    return [(args[i + 1], args[i + 2]) for i, a in enumerate(args) if a == flag]


def test_a_step_sees_its_root_its_inputs_and_nothing_else(tmp_path):
    root, inp = tmp_path / "root", tmp_path / "inputs"
    sb = sandbox.step(root, "aarch64", env={"PATH": "/usr/bin"}, binds=[(inp, "/enginefab/inputs")],
                      scratch=tmp_path / "scratch")
    args = _args(sb, root)
    assert _pairs(args, "--bind") == [(str(root), "/"), (str(tmp_path / "scratch/tmp"), "/tmp")]
    assert _pairs(args, "--ro-bind") == [(str(inp), "/enginefab/inputs")]  # no host "/", no qemu path
    assert not _pairs(args, "--dev-bind")
    for flag in ("--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--new-session",
                 "--die-with-parent", "--clearenv"):
        assert flag in args
    assert args[args.index("--cap-drop") + 1] == "ALL"
    assert [args[i + 1] for i, a in enumerate(args) if a == "--cap-add"] == list(sandbox.STEP_CAPS)
    assert "CAP_DAC_READ_SEARCH" not in args and "CAP_SYS_ADMIN" not in args
    assert args[args.index("--seccomp") + 1] == "7"
    assert (tmp_path / "scratch/tmp").stat().st_mode & 0o7777 == 0o1777


def test_a_check_sees_the_image_through_an_overlay_with_1777_temporary_directories(tmp_path):
    sb = sandbox.Sandbox(root=tmp_path / "image", arch="x86_64", env={}, mode="image", caps=sandbox.DROP_CAPS,
                         tmpfs=("/var/tmp",))
    spec, new_root = sandbox._spec(sb, tmp_path / "scratch", error_fd=9)
    assert spec["overlay"] == {"lower": str(tmp_path / "image"), "scratch": str(tmp_path / "scratch")}
    assert new_root == tmp_path / "scratch/merged"
    args = _args(sb, new_root)
    assert _pairs(args, "--bind") == [(str(new_root), "/")]
    tmpfs = [args[i + 1] for i, a in enumerate(args) if a == "--tmpfs"]
    assert tmpfs == ["/tmp", "/dev/shm", "/var/tmp"]
    assert all(args[i - 2:i] == ["--perms", "1777"] for i, a in enumerate(args) if a == "--tmpfs")
    assert [args[i + 1] for i, a in enumerate(args) if a == "--cap-add"] == ["CAP_SETUID", "CAP_SETGID"]


def test_an_overlay_cannot_take_every_path(tmp_path):
    sb = sandbox.Sandbox(root=tmp_path / "a,b", arch="x86_64", env={}, mode="image")
    with pytest.raises(sandbox.SandboxError, match="overlay mount cannot take"):
        sandbox._spec(sb, tmp_path / "scratch", error_fd=9)


def test_ids_are_mapped_one_to_one_as_root(monkeypatch):
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 0)
    assert sandbox._id_maps() == {"uid_map": "0 0 4294967295\n", "gid_map": "0 0 4294967295\n", "setgroups": "allow"}
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 1234)
    monkeypatch.setattr(sandbox.os, "getegid", lambda: 99)
    assert sandbox._id_maps() == {"uid_map": "0 1234 1\n", "gid_map": "0 99 1\n", "setgroups": "deny"}


def test_qemu_is_registered_for_aarch64_elf_files_only():
    rule = sandbox.binfmt_rule("aarch64")
    _, name, kind, offset, magic, mask, interpreter, flags = rule.split(":")
    assert (name, kind, offset, flags) == ("enginefab-aarch64", "M", "", "PF")
    assert interpreter.endswith("/qemu-aarch64-static")
    raw = bytes(int(h, 16) for h in magic.split("\\x")[1:])
    assert raw[:4] == b"\x7fELF" and raw[4] == 2 and raw[18:20] == b"\xb7\x00"  # 64-bit, EM_AARCH64
    m = bytes(int(h, 16) for h in mask.split("\\x")[1:])
    with open("/bin/sh", "rb") as f:  # this host's own (x86_64) programs do not match
        head = f.read(20)
    assert bytes(a & b for a, b in zip(head, m)) != raw


def test_a_host_wide_registration_with_the_f_flag_is_used(tmp_path):
    (tmp_path / "register").write_text("")
    (tmp_path / "status").write_text("enabled\n")
    entry = tmp_path / "qemu-aarch64"
    entry.write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POCF\noffset 0\n"
                     "magic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n")
    assert sandbox.host_binfmt("aarch64", tmp_path)
    assert not sandbox.host_binfmt("x86_64", tmp_path)
    entry.write_text(entry.read_text().replace("flags: POCF", "flags: PC"))  # qemu not held open: no use
    assert not sandbox.host_binfmt("aarch64", tmp_path)
    assert not sandbox.host_binfmt("aarch64", tmp_path / "absent")


def test_qemu_must_be_static_to_start_inside_the_root(monkeypatch, tmp_path):
    assert sandbox.is_static(Path(sandbox.shutil.which("qemu-aarch64-static")))
    assert not sandbox.is_static(Path("/usr/bin/bwrap"))  # Debian's is dynamic, as nixpkgs' aarch64 qemu-user
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: "/usr/bin/bwrap")
    with pytest.raises(sandbox.SandboxError, match="linked dynamically") as e:
        sandbox.binfmt_rule("aarch64")
    assert "qemu-user-static" in (e.value.fix or "")
