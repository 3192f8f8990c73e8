"""The static audit's checks as pure functions of a hand-built Inventory (no image, no disk), and
`scan` on a small real tree. The demo images' audits are in test_check_images.py."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from enginefab.check import binaries, conventions, distributions, linking, static
from enginefab.check.facts import Facts
from enginefab.check.inventory import Dist, Home, Inventory, scan
from enginefab.check.structure import Dlopen
from enginefab.core.elf import Elf
from enginefab.core.pytarget import Target

SP = "/usr/local/lib/python3.9/dist-packages"
LIB = "/usr/lib/x86_64-linux-gnu"


def _facts(**kw) -> Facts:
    base = dict(arch="x86_64", glibc="2.31", env={"PYTHONUNBUFFERED": "1"}, accelerator="cpu", stack_provides=[],
                host_provides=[], python=Target(python="3.9", arch="x86_64", glibc="2.31"), site_packages=SP,
                pins={}, engine="pytorch", engine_version="1.8.0")
    return Facts(**{**base, **kw})


def _elf(path: str, needed=(), *, machine="EM_X86_64", glibc=(2, 17), runpath=(), soname=None) -> Elf:
    return Elf(path, machine, list(needed), list(runpath), glibc, soname)


def _inv(*elves: Elf, files: tuple[str, ...] = (), **kw) -> Inventory:
    """An Inventory whose directories hold the given ELF files and `files`."""
    names: dict[str, set[str]] = {}
    for p in [e.path for e in elves] + list(files):
        d, _, n = p.rpartition("/")
        names.setdefault(d or "/", set()).add(n)
    return Inventory(elves=elves, names_in_dir={d: frozenset(v) for d, v in names.items()}, **kw)


LIBC = _elf(f"{LIB}/libc.so.6", ["ld-linux-x86-64.so.2"], glibc=None, soname="libc.so.6")


def test_elf_arch_names_the_files_built_for_another_machine():
    inv = _inv(LIBC, _elf("/usr/bin/python3.9", ["libc.so.6"]), _elf(f"{LIB}/libstdc++.so.6", machine="EM_AARCH64"))
    ok = binaries.elf_arch(_inv(LIBC), _facts())
    assert (ok.status, ok.detail) == ("pass", "all 1 ELF files are x86_64")
    bad = binaries.elf_arch(inv, _facts())
    assert bad.status == "fail"
    assert bad.detail == f"1 ELF files are not x86_64: {LIB}/libstdc++.so.6 (EM_AARCH64)"
    assert bad.data == {"wrong": [f"{LIB}/libstdc++.so.6 (EM_AARCH64)"]}


def test_glibc_reports_the_highest_version_and_the_files_needing_a_newer_one():
    inv = _inv(LIBC, _elf("/usr/bin/a", glibc=(2, 28)), _elf("/usr/bin/b", glibc=(2, 34)), _elf("/usr/bin/c", glibc=(2, 32)))
    ok = binaries.glibc(inv, _facts(glibc="2.34"))
    assert ok.status == "pass" and ok.detail == "highest GLIBC symbol version needed: 2.34 <= 2.34"
    bad = binaries.glibc(inv, _facts())
    assert bad.status == "fail"
    assert bad.detail == "2 files need glibc newer than 2.31: /usr/bin/b (GLIBC_2.34), /usr/bin/c (GLIBC_2.32)"
    assert bad.data == {"max": "2.34", "too_new": ["/usr/bin/b", "/usr/bin/c"]}
    none = binaries.glibc(_inv(LIBC), _facts())
    assert none.detail == "highest GLIBC symbol version needed: none <= 2.31" and none.data["max"] is None


def _audit_links(inv: Inventory, facts: Facts):
    r = linking.resolve(inv, facts)
    return r, linking.dt_needed(inv, facts, r)


def test_dt_needed_follows_runpath_origin_ld_library_path_and_ld_so_conf():
    torch = f"{SP}/torch/lib"
    inv = _inv(LIBC, _elf(f"{torch}/libtorch.so", ["libc10.so", "libc.so.6"], runpath=["$ORIGIN"]),
               _elf(f"{torch}/libc10.so", soname="libc10.so"),
               _elf("/usr/bin/tool", ["libfoo.so.1", "libbar.so.2", "/opt/abs/libabs.so"]),
               files=("/opt/foo/libfoo.so.1", "/opt/bar/libbar.so.2", "/opt/abs/libabs.so"),
               ld_conf_dirs=("/opt/bar",), present=frozenset({"/opt/abs/libabs.so"}))
    r, res = _audit_links(inv, _facts(env={"LD_LIBRARY_PATH": "/opt/foo:"}))
    assert res.status == "pass" and r.inside == 6 and not r.unresolved
    assert res.detail == "every DT_NEEDED resolves: 6 resolved in the image, 0 by the cpu stack, 0 by the host driver"
    _, without = _audit_links(inv, _facts())  # no LD_LIBRARY_PATH: /opt/foo is not searched
    assert without.status == "fail" and without.detail.startswith("unresolved sonames: libfoo.so.1 (needed by /usr/bin/tool); ")
    assert without.data == {"unresolved": {"libfoo.so.1": ["/usr/bin/tool"]}}


def test_dt_needed_counts_stack_host_base_preloaded_and_optional_and_names_the_rest():
    tv = f"{SP}/torchvision/_C.so"
    inv = _inv(LIBC, _elf(f"{SP}/torch/lib/libc10.so", ["libcudart.so.10.2"], soname="libc10.so"),
               _elf(tv, ["libc10.so", "libcuda.so.1", "libstdc++.so.6", "libgomp.so.1", "libnope.so.3"]),
               _elf("/usr/bin/x", ["libnope.so.3"]), _elf("/usr/bin/y", ["libnope.so.3"]))
    facts = _facts(accelerator="cuda", stack_provides=["libcudart.so.10.2"], host_provides=["libcuda.so.1"],
                   base_provides=["libstdc++.so.6"], optional={"libgomp.so.1": "OpenMP, only for CPU ops"})
    r, res = _audit_links(inv, facts)
    assert (r.inside, r.from_stack, r.from_host, r.from_base) == (1, 1, 1, 1)
    assert r.stack_users == {"libcudart.so.10.2": [f"{SP}/torch/lib/libc10.so"]}
    assert res.status == "fail"
    assert res.detail == (
        f"unresolved sonames: libnope.so.3 (needed by {tv} +2); 1 resolved in the image, 1 by the cuda stack, "
        "1 by the host driver, 1 by the declared base; loaded first by the package that provides them: "
        "libc10.so (torch/lib/libc10.so, for torchvision/_C.so); optional, left unresolved: "
        f"libgomp.so.1 (OpenMP, only for CPU ops; needed by {tv})")
    assert res.data == {"unresolved": {"libnope.so.3": [tv, "/usr/bin/x", "/usr/bin/y"]}}


def test_stack_sonames_lists_what_the_engine_needs_from_the_stack():
    lib = f"{SP}/torch/lib/libc10_cuda.so"
    inv = _inv(LIBC, _elf(lib, ["libcudart.so.10.2"]), _elf(f"{SP}/torch/lib/libtorch_cuda.so", ["libcudart.so.10.2"]),
               evidence=frozenset({(f"{SP}/torch/lib/libtorch_cuda.so", "libcudnn.so")}))
    dl = Dlopen(versions="*", engine="pytorch", sonames=["libcudnn.so.8"], source="torch/backends/cudnn",
                evidence={"path": f"{SP}/torch/lib/libtorch_cuda.so", "contains": "libcudnn.so"})
    facts = _facts(accelerator="cuda", stack="cuda 10.2", stack_provides=["libcudart.so.10.2", "libcudnn.so.8"],
                   dlopen=[dl])
    r = linking.resolve(inv, facts)
    res = linking.stack_sonames(inv, facts, r)
    assert res.status == "pass"
    assert res.detail == ("pytorch 1.8.0 needs from the cuda 10.2 stack: [DT_NEEDED] libcudart.so.10.2 "
                          f"(by {lib} +1); [dlopen (torch/backends/cudnn)] libcudnn.so.8; all provided")
    assert res.data["needs"] == {"libcudart.so.10.2": f"DT_NEEDED by {lib} +1",
                                 "libcudnn.so.8": "dlopen (torch/backends/cudnn)"}
    missing = linking.stack_sonames(inv, _facts(**{**facts.__dict__, "stack_provides": ["libcudart.so.10.2"]}), r)
    assert missing.status == "fail"
    assert "libcudnn.so.8 is needed (dlopen (torch/backends/cudnn)) but the cuda 10.2 stack does not provide it" \
        in missing.detail


def test_stack_sonames_refuses_a_dlopen_declaration_whose_evidence_is_absent():
    dl = Dlopen(versions=">=1.8", engine="pytorch", sonames=["libcudnn.so.8"],
                evidence={"path": "/lib/libtorch_cuda.so", "contains": "cudnnCreate"})
    facts = _facts(accelerator="cuda", stack="cuda 10.2", stack_provides=["libcudnn.so.8"], dlopen=[dl])
    inv = _inv(LIBC)
    res = linking.stack_sonames(inv, facts, linking.resolve(inv, facts))
    assert res.status == "fail"
    assert res.detail.endswith("; /lib/libtorch_cuda.so does not contain 'cudnnCreate': the dlopen declaration "
                               "for pytorch >=1.8 does not fit this image")
    nothing = linking.stack_sonames(inv, _facts(accelerator="cuda", stack_provides=["libcudnn.so.8"]),
                                    linking.resolve(inv, facts))
    assert (nothing.status, nothing.detail) == ("skip", "nothing in the image links the cuda stack's libraries")


def _dist(dirname, name, version, tags=("cp39-cp39-manylinux2014_x86_64",)) -> Dist:
    return Dist(dirname, name, version, tags)


def test_protobuf_passes_old_generated_code_only_with_a_protobuf_that_imports_it():
    pb2 = tuple(f"{SP}/tf/m{i}_pb2.py" for i in range(5))
    old = _inv(LIBC, old_pb2=pb2, dists=(_dist("protobuf-3.20.3.dist-info", "protobuf", "3.20.3"),))
    ok = distributions.protobuf(old, _facts())
    assert ok.status == "pass" and ok.detail.endswith("+2); protobuf 3.20.3 can import them (< 3.21)")
    new = _inv(LIBC, old_pb2=pb2, dists=(_dist("protobuf-4.21.0.dist-info", "protobuf", "4.21.0"),))
    bad = distributions.protobuf(new, _facts())
    assert bad.status == "fail" and bad.detail.startswith("protobuf 4.21.0 cannot import 5 _pb2 modules generated by")
    assert bad.detail.endswith("constrain protobuf<3.21") and bad.data == {"protobuf": "4.21.0", "old_pb2": 5}
    pure = distributions.protobuf(new, _facts(env={"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}))
    assert pure.status == "pass"
    assert distributions.protobuf(_inv(LIBC, dists=new.dists), _facts()).detail == \
        "no _pb2 modules from protoc < 3.19 (protobuf 4.21.0)"


def test_wheel_tags_and_dist_versions_compare_with_the_python_and_the_pins():
    dists = (_dist("numpy-1.20.3.dist-info", "numpy", "1.20.3"), _dist("six-1.16.0.dist-info", "six", "1.16.0", ("py3-none-any",)),
             _dist("torch-1.8.0.dist-info", "torch", "1.8.0", ("cp38-cp38-linux_x86_64",)))
    inv = _inv(LIBC, dists=dists)
    pins = {"numpy": "1.20.2", "six": "1.16.0", "torch": "1.8.0", "pillow": "8.0"}
    tags, versions = distributions.distributions(inv, _facts(pins=pins))
    assert tags.status == "fail"
    assert tags.detail == "wheels built for another Python or platform: torch-1.8.0.dist-info (cp38-cp38-linux_x86_64)"
    assert versions.status == "fail"
    assert versions.detail == "installed versions differ from the lock: numpy 1.20.3 (pinned 1.20.2), pillow missing (pinned 8.0)"
    good = distributions.distributions(_inv(LIBC, dists=dists[:2]), _facts(pins={"numpy": "1.20.03"}))  # normalised
    assert [(r.status, r.detail) for r in good] == [
        ("pass", "2 installed distributions fit cp39 x86_64"),
        ("pass", "all 1 pinned distributions installed at their pinned versions")]
    assert distributions.distributions(_inv(LIBC), _facts())[0].detail == f"{SP} is absent"


def test_modelarts_conventions_name_every_problem():
    passwd = (("root", "x", "0", "0", "root", "/root", "/bin/sh"), ("ma-user", "x", "1000", "100", "", "/home/ma-user", "/bin/sh"))
    good = _inv(LIBC, passwd=passwd, home=Home("/home/ma-user", True, (1000, 100)))
    ok = conventions.modelarts(good, _facts())
    assert ok.status == "pass"
    assert ok.detail == "ma-user 1000:100, home and workdir /home/ma-user, PYTHONUNBUFFERED=1, no root setuid/setgid files"
    bad = _inv(LIBC, passwd=passwd[:1], home=Home("/home/ma-user", True, (0, 0)), setuid=("/usr/bin/su",))
    res = conventions.modelarts(bad, _facts(user="0:0", env={}))
    assert res.status == "fail"
    # each problem, grouped by the rule it breaks, then the rule and the page that states it
    assert res.detail.startswith("config User is '0:0', not 1000:100, /etc/passwd has no user with uid 1000 "
                                 "[ModelArts: the image's user is ma-user, uid 1000")
    assert "devtool-modelarts_03034.html" in res.detail
    assert ("/home/ma-user is owned by 0:0, not 1000:100 [ModelArts: the boot command runs in /home/ma-user, the "
            "user's home (support.huaweicloud.com/intl/en-us/develop-modelarts/develop-modelarts-1416.html)]") in res.detail
    assert "PYTHONUNBUFFERED=1 is not set [ModelArts: logs go to standard output" in res.detail
    assert ("1 root-owned setuid/setgid files: /usr/bin/su [ModelArts: no file owned by root with setuid or setgid "
            "(support.huaweicloud.com/en-us/engineers-modelarts/modelarts_23_0217.html") in res.detail
    unowned = _inv(LIBC, passwd=passwd, home=Home("/home/ma-user", True))  # scanned as non-root: owner unknown
    assert conventions.modelarts(unowned, _facts()).status == "pass"
    assert "/home/ma-user does not exist" in conventions.modelarts(_inv(LIBC, passwd=passwd), _facts()).detail


def test_accelerator_env_asks_for_the_stack_variables():
    assert conventions.accelerator_env(_facts()) == []
    (cuda,) = conventions.accelerator_env(_facts(accelerator="cuda", env={"NVIDIA_VISIBLE_DEVICES": "all"}))
    assert (cuda.name, cuda.status, cuda.detail) == ("cuda-env", "fail",
                                                     "missing NVIDIA_DRIVER_CAPABILITIES, NVIDIA_REQUIRE_CUDA")
    env = {"ASCEND_OPP_PATH": "a", "ASCEND_AICPU_PATH": "b", "TBE_IMPL_PATH": "c"}
    (cann,) = conventions.accelerator_env(_facts(accelerator="cann", env=env))
    assert cann.status == "pass" and cann.detail == "ASCEND_OPP_PATH, ASCEND_AICPU_PATH, TBE_IMPL_PATH set"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A small tree: this machine's /bin/ls (a real ELF), setuid, an old _pb2 module, a dist-info."""
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    shutil.copy("/bin/ls", root / "usr/bin/ls")
    (root / "usr/bin/ls").chmod(0o4755)
    (root / "usr/bin/dir").symlink_to("ls")  # a name in /usr/bin, not a second ELF file
    sp = root / SP.lstrip("/")
    (sp / "six-1.16.0.dist-info").mkdir(parents=True)
    (sp / "six-1.16.0.dist-info/METADATA").write_text("Metadata-Version: 2.1\nName: Six\nVersion: 1.16.0\n\nName: x\n")
    (sp / "six-1.16.0.dist-info/WHEEL").write_text("Wheel-Version: 1.0\nTag: py2-none-any\nTag: py3-none-any\n")
    (sp / "old_pb2.py").write_text("x = _descriptor.FieldDescriptor(name='a')\n")
    (sp / "new_pb2.py").write_text("x = _descriptor.FieldDescriptor(name='a', create_key=_descriptor._internal_create_key)\n")
    (root / "etc/ld.so.conf.d").mkdir(parents=True)
    (root / "etc/ld.so.conf.d/x.conf").write_text("/opt/lib  # ours\nnot/absolute\n")
    (root / "etc/passwd").write_text("ma-user:x:1000:100::/home/ma-user:/bin/sh\n")
    (root / "home/ma-user").mkdir(parents=True)
    return root


def test_scan_finds_elves_setuid_old_protoc_dists_and_evidence(tree: Path):
    inv = scan(tree, site_packages=SP, home="/home/ma-user", evidence=[("/usr/bin/ls", "GLIBC_2"), ("/usr/bin/ls", "no such")])
    (ls,) = inv.elves
    assert (ls.path, ls.machine) == ("/usr/bin/ls", "EM_X86_64") and "libc.so.6" in ls.needed
    is_root = (tree / "usr/bin/ls").stat().st_uid == 0
    assert inv.setuid == (("/usr/bin/ls",) if is_root else ())
    assert inv.old_pb2 == (f"{SP}/old_pb2.py",) and inv.ld_conf_dirs == ("/opt/lib",)
    assert inv.dists == (Dist("six-1.16.0.dist-info", "six", "1.16.0", ("py2-none-any", "py3-none-any")),)
    assert inv.passwd == (("ma-user", "x", "1000", "100", "", "/home/ma-user", "/bin/sh"),)
    assert inv.home.is_dir and inv.evidence == frozenset({("/usr/bin/ls", "GLIBC_2")})
    assert inv.anywhere("dir") and not inv.anywhere("libc.so.6")
    assert "passwd" in inv.names_in_dir["/etc"] and "ld.so.conf.d" not in inv.names_in_dir["/etc"]  # files only
    layers_only = scan(tree, site_packages="/nope")
    assert layers_only.dists is None and layers_only.passwd == () and layers_only.home is None


def test_audit_of_a_tree_reports_every_check_in_order(tree: Path):
    (tree / "usr/bin/ls").chmod(stat.S_IMODE(0o755))
    results = static.audit(tree, _facts(glibc="2.99", pins={"six": "1.16.0"}))
    assert [r.name for r in results] == ["elf-arch", "glibc", "dt-needed", "stack-sonames", "protobuf-generated-code",
                                         "wheel-tags", "dist-versions", "modelarts-conventions", "modelarts-size"]
    by = {r.name: r for r in results}
    assert by["dt-needed"].status == "fail" and "libc.so.6 (needed by /usr/bin/ls)" in by["dt-needed"].detail
    assert [by[n].status for n in ("elf-arch", "glibc", "wheel-tags", "dist-versions")] == ["pass"] * 4
    assert by["protobuf-generated-code"].detail == (f"1 _pb2 modules from protoc < 3.19 ({SP}/old_pb2.py); "
                                                    "protobuf is not installed here (add one < 3.21 if these are used)")
    layers = static.audit(tree, _facts(glibc="2.99"), with_image_checks=False)
    assert [r.name for r in layers] == [r.name for r in results][:-2]
