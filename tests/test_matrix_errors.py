"""Errors a user meets while editing engines/, each asserted on the words the user needs: the file
and 1-based line, the image by alias, the field, "did you mean" only for a similar name, and a fix
only when it is the right one. Every problem is listed, root cause first; a broken image or file
fails only the commands that touch it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enginefab.core.errors import MatrixError
from enginefab.engines.matrix import load
from tests.conftest import cli, enginefab, session_for


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1))


def line_of(path: Path, needle: str) -> int:
    """1-based line of the first line holding `needle` (the line a user would jump to)."""
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def line_of_text(path: Path, anchor: str, needle: str) -> int:
    """How many lines after the line holding `anchor` the next line holding `needle` is."""
    lines = path.read_text().splitlines()
    start = next(n for n, line in enumerate(lines) if anchor in line)
    return next(n for n, line in enumerate(lines[start:]) if needle in line)


def refusal(proj: Path) -> MatrixError:
    with pytest.raises(MatrixError) as e:
        load(proj)
    return e.value


def in_project(proj: Path, *args: str):
    return cli(*args, cwd=proj, env={"ENGINEFAB_ROOT": str(proj)})


def test_an_unknown_key_says_did_you_mean_and_where(engines_copy):
    f = engines_copy / "engines/pytorch.toml"
    edit(f, 'requirements = ["torch==1.8.0", "torchvision==0.9.0"]', 'requirments = ["torch==1.8.0", "torchvision==0.9.0"]')
    msg = refusal(engines_copy).message
    assert f"engines/pytorch.toml:{line_of(f, 'requirments')}:" in msg
    assert "image pytorch-cuda10.2" in msg and "the 1st [[image]]" in msg
    assert "unknown key 'requirments' (did you mean 'requirements'?)" in msg
    assert "image.0" not in msg and "image.1" not in msg


def test_a_misspelt_required_key_is_the_unknown_key_not_a_missing_field(engines_copy):
    f = engines_copy / "engines/platforms.toml"
    edit(f, 'suite = "bullseye"', 'suit = "bullseye"')
    msg = refusal(engines_copy).message
    assert f"engines/platforms.toml:{line_of(f, 'suit = ')}:" in msg
    assert "unknown key 'suit' (did you mean 'suite'?)" in msg
    assert "Field required" not in msg and "required, but not set" not in msg


def test_an_unknown_key_like_no_field_gets_no_suggestion(engines_copy):
    edit(engines_copy / "engines/pytorch.toml", 'arch = "x86_64"', 'arch = "x86_64"\nzzyzx = 1')
    msg = refusal(engines_copy).message
    assert "unknown key 'zzyzx'" in msg and "did you mean" not in msg
    assert "requirements" in msg  # the fix lists the keys the table allows


def test_a_toml_syntax_error_gives_file_line_and_column(engines_copy):
    f = engines_copy / "engines/kungfu.toml"
    edit(f, 'engine_version = "0.2.2"\nframework', 'engine_version = "0.2.2\nframework')
    msg = refusal(engines_copy).message
    bad = line_of(f, 'engine_version = "0.2.2')
    assert f"engines/kungfu.toml:{bad}: not valid TOML, column " in msg


def test_positions_inside_an_image_count_from_one_and_name_the_alias(engines_copy):
    f = engines_copy / "engines/horovod.toml"
    text = f.read_text()
    at = text.index('sha256 = "', text.index('alias = "horovod-pytorch-cuda10.2"'))
    f.write_text(text[:at] + 'sha256 = "not-a-hash' + text[at + len('sha256 = "') + 64:])
    msg = refusal(engines_copy).message
    assert f"engines/horovod.toml:{line_of(f, 'not-a-hash')}: image horovod-pytorch-cuda10.2" in msg
    assert "files.0" not in msg and "field files[1].sha256: " in msg and "'not-a-hash'" in msg


def test_every_problem_is_listed_root_cause_first(engines_copy):
    edit(engines_copy / "engines/tensorflow.toml", 'accelerator = "cuda-10.1"', 'accelerator = "cuda-10.9"')
    edit(engines_copy / "engines/mindspore.toml", "[[image]]", "[[image]\n")  # a syntax error
    edit(engines_copy / "engines/kungfu.toml", 'alias = "kungfu-tf1.13"', 'alias = "kungfu-tf1.13"\npyton = "3.6"')
    msg = refusal(engines_copy).message
    assert msg.startswith("3 problems in engines/")
    syntax, key, ref = (msg.index(s) for s in ("mindspore.toml", "unknown key 'pyton'", "unknown accelerator stack 'cuda-10.9'"))
    assert syntax < key < ref
    assert "(did you mean 'cuda-10." in msg and "'cuda-10.1'" in msg and "cann-5.0.2' or" not in msg


def test_a_python_the_engine_does_not_publish_offers_the_ones_it_does(engines_copy):
    f = engines_copy / "engines/pytorch.toml"
    edit(f, 'name = "pytorch_1.8.0-cpu-py_3.9-debian_11-aarch64"\nengine_version = "1.8.0"\npython = "3.9"',
         'name = "pytorch_1.8.0-cpu-py_3.13-debian_11-aarch64"\nengine_version = "1.8.0"\npython = "3.13"')
    e = refusal(engines_copy)
    assert "demo-pytorch-aarch64" in e.message
    assert "PyTorch 1.8.0 publishes no build for Python 3.13 (builds exist for 3.6, 3.7, 3.8, 3.9)" in e.message
    assert "use one of Python 3.6, 3.7, 3.8, 3.9" in e.message
    assert "[python." not in e.message  # not "add a runtime" for a Python the engine has no build for


def test_a_published_python_without_a_runtime_offers_to_add_one(engines_copy):
    f = engines_copy / "engines/pytorch.toml"
    edit(f, 'name = "pytorch_1.8.0-cpu-py_3.9-debian_11-aarch64"\nengine_version = "1.8.0"\npython = "3.9"',
         'name = "pytorch_1.8.0-cpu-py_3.8-debian_11-aarch64"\nengine_version = "1.8.0"\npython = "3.8"')
    msg = refusal(engines_copy).message
    assert "no Python 3.8 runtime is defined for OS debian-11 (it has: 3.9)" in msg
    assert 'add a [python."3.8-debian-11"] entry to platforms.toml, or use Python 3.9' in msg


def test_a_name_that_contradicts_the_arch_is_reported_as_such_before_the_duplicate(engines_copy):
    f = engines_copy / "engines/pytorch.toml"
    edit(f, 'name = "pytorch_1.8.0-cpu-py_3.9-debian_11-aarch64"', 'name = "pytorch_1.8.0-cpu-py_3.9-debian_11-x86_64"')
    edit(engines_copy / "engines/pytorch.toml", 'name = "pytorch_1.8.0-cuda_10.2-py_3.9-debian_11-x86_64"',
         'name = "pytorch_1.8.0-cpu-py_3.9-debian_11-x86_64"')
    msg = refusal(engines_copy).message
    said = "says arch 'x86_64', but the image's arch is 'aarch64'"
    assert "the name contradicts the fields" in msg and said in msg
    arch_line = line_of(f, 'alias = "demo-pytorch-aarch64"') + line_of_text(f, 'alias = "demo-pytorch-aarch64"', "arch = ")
    assert f"engines/pytorch.toml:{arch_line}:" in msg
    assert msg.index(said) < msg.index("is used twice")
    assert "and 1 more problems" not in msg


def test_a_broken_file_leaves_the_other_images_usable(engines_copy):
    edit(engines_copy / "engines/mindspore.toml", "[[image]]", "[[image]\n")
    edit(engines_copy / "engines/kungfu.toml", 'alias = "kungfu-tf1.13"', 'alias = "kungfu-tf1.13"\npyton = "3.6"')
    p = in_project(engines_copy, "list", "--json")
    rows = json.loads(p.stdout)
    assert p.returncode == 1
    valid = {r["alias"] for r in rows if r["valid"]}
    invalid = {r["alias"] or r["file"]: r["reason"] for r in rows if not r["valid"]}
    assert {"pytorch-cuda10.2", "demo-pytorch-x86_64", "tensorflow-cuda10.1"} <= valid
    assert "unknown key 'pyton'" in invalid["kungfu-tf1.13"] and "not valid TOML" in invalid["engines/mindspore.toml"]
    human = in_project(engines_copy, "list")
    assert "invalid" in human.stdout and "kungfu-tf1.13" in human.stdout and "pytorch-cuda10.2" in human.stdout
    shown = in_project(engines_copy, "show", "demo-pytorch-aarch64", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["image"]["alias"] == "demo-pytorch-aarch64"
    touched = in_project(engines_copy, "show", "kungfu-tf1.13")
    assert touched.returncode == 2 and "unknown key 'pyton'" in touched.stderr and "Traceback" not in touched.stderr
    unread = in_project(engines_copy, "show", "mindspore-cuda10.1")
    assert unread.returncode == 2 and "engines/mindspore.toml could not be read" in unread.stderr
    everything = in_project(engines_copy, "lock", "--check", "--json")
    res = json.loads(everything.stdout)
    assert everything.returncode == 1 and any("unknown key 'pyton'" in x for x in res["problems"])
    assert sorted(res["invalid"]) == ["engines/mindspore.toml", "kungfu-tf1.13"]


def test_lock_check_tells_never_locked_from_stale(engines_copy):
    f = engines_copy / "engines/pytorch.toml"
    text = f.read_text()
    start = text.rindex("[[image]]", 0, text.index('alias = "demo-pytorch-aarch64"'))
    end = text.find("[[image]]", start + 1)
    block = text[start:end if end > 0 else len(text)]  # the aarch64 demo's entry
    f.write_text(text + "\n" + block.replace('alias = "demo-pytorch-aarch64"', 'alias = "new-pytorch-aarch64"')
                 .replace("demo = true", "demo = false")
                 .replace('"pytorch_1.8.0-cpu-py_3.9-debian_11-aarch64"', '"pytorch_1.8-cpu-py_3.9-debian_11-aarch64"'))
    res = json.loads(in_project(engines_copy, "lock", "--check", "--json").stdout)
    assert res["ok"], res["problems"]
    assert any(w.startswith("new-pytorch-aarch64: never locked") for w in res["warnings"])
    assert res["never_locked"] == ["new-pytorch-aarch64"] and res["stale"] == [] and res["invalid"] == []
    strict = in_project(engines_copy, "lock", "--check", "--strict", "--json")
    assert strict.returncode == 1
    assert any(x.startswith("new-pytorch-aarch64: never locked") for x in json.loads(strict.stdout)["problems"])
    edit(f, 'debs = ["libgomp1", "libstdc++6"]\ndemo = true', 'debs = ["libgomp1"]\ndemo = true')
    stale = in_project(engines_copy, "lock", "--check", "--json")
    problems = json.loads(stale.stdout)["problems"]
    assert stale.returncode == 1 and any(x.startswith("demo-pytorch-x86_64: stale: engines/ changed since it was locked")
                                         for x in problems)
    assert not any(x.startswith("new-pytorch-aarch64") for x in problems)
    # the image derived from it is stale with it (issue 19), and says why
    assert sorted(json.loads(stale.stdout)["stale"]) == ["demo-model-x86_64", "demo-pytorch-x86_64"]
    assert any(x.startswith("demo-model-x86_64:") and "parent demo-pytorch-x86_64" in x for x in problems), problems


def test_a_new_family_needs_only_its_file_for_its_names(engines_copy):
    from enginefab.engines.names import NameError_

    f = engines_copy / "engines/pytorch.toml"
    text = f.read_text().replace('name = "pytorch"', 'name = "pytorchx"\nspellings = ["ptx"]', 1).replace(
        "abbreviation = \"PT\"", "abbreviation = \"PX\"")
    (engines_copy / "engines/pytorchx.toml").write_text(text.split("# --- preset")[0])
    m = load(engines_copy)
    n = m.grammar.parse("pytorchx_1.8.0-cpu-py_3.9-debian_11-aarch64")
    assert (n.engine, n.engine_version, n.arch) == ("pytorchx", "1.8.0", "aarch64")
    assert m.grammar.parse("PX-1.8.0-TF-1.13.1-python3.6").format() == "PX-1.8.0-TF-1.13.1-python3.6"
    historical = m.grammar.parse("ptx_1.8.0-cpu-py_3.9-debian_11-aarch64")  # another spelling, kept as written
    assert historical == n and historical.format() == "ptx_1.8.0-cpu-py_3.9-debian_11-aarch64"
    with pytest.raises(NameError_, match="did you mean 'pytorch'"):
        m.grammar.parse("pytorh_1.8.0-cpu-py_3.9-debian_11-aarch64")


def test_closure_date_defaults_to_the_release_day_plus_grace(engines_copy):
    from enginefab.lock.asof import as_of
    from enginefab.lock.declared import matrix_entry

    m = load(engines_copy)
    img = m.get("demo-pytorch-aarch64")
    assert as_of(img, m.platforms.pypi).instant == m.platforms.pypi.exclude_newer
    assert "as_of" not in matrix_entry(img, m)  # committed locks stay current
    edit(engines_copy / "engines/pytorch.toml", 'version = "1.8.0"\npython', 'version = "1.8.0"\npublished = "2021-03-04"\npython')
    m = load(engines_copy)
    entry = matrix_entry(m.get("demo-pytorch-aarch64"), m)
    assert entry["as_of"]["instant"] == "2021-06-02T00:00:00Z"  # + 90 days
    assert "published 2021-03-04; plus 90 days' grace" in entry["as_of"]["why"]
    res = json.loads(in_project(engines_copy, "lock", "--check", "--json").stdout)
    assert any(x.startswith("demo-pytorch-aarch64: stale:") and "as_of" in x for x in res["problems"])


@pytest.mark.network
def test_a_resolver_conflict_names_the_constraints_entry():
    from enginefab.core.errors import LockError
    from enginefab.core.pytarget import Target
    from enginefab.lock import pypi

    with pytest.raises(LockError) as e:
        pypi.resolve_versions(["requests==2.31.0"], ["urllib3<1.21", "idna<4"], Target(python="3.9", arch="x86_64",
                              glibc="2.31"), image="demo", session=session_for(), exclude_newer="2026-11-01T00:00:00Z")
    err = e.value
    assert "the conflict involves constraints entry 'urllib3<1.21'; requirements entry 'requests==2.31.0'" in err.message
    assert "idna" not in err.input
    assert err.fix.startswith("loosen or remove the constraints entry 'urllib3<1.21'")


@pytest.mark.network
def test_similar_package_names_only_when_similar(engines_copy):
    edit(engines_copy / "engines/pytorch.toml", 'debs = ["libgomp1", "libstdc++6"]\ndemo = true\ndescription = "PyTorch 1.8.0 (CPU)',
         'debs = ["libgomp1", "python3.13"]\ndemo = true\ndescription = "PyTorch 1.8.0 (CPU)')
    p = enginefab("lock", "demo-pytorch-aarch64", "--json", cwd=engines_copy, timeout=600)
    err = json.loads(p.stdout)
    assert p.returncode == 2 and "no package 'python3.13' in bullseye" in err["error"]
    assert "similar: python3.9" in err["fix"] and "abydos" not in err["fix"] and "-doc" not in err["fix"]


def test_a_json_syntax_error_in_a_definition_gives_file_line_and_column(engines_copy):
    f = engines_copy / "build/pytorch-cuda10.2.json"
    lines = f.read_text().splitlines()
    lines[2] = lines[2].replace(":", "", 1)  # line 3 loses its colon
    f.write_text("\n".join(lines) + "\n")
    p = in_project(engines_copy, "show", "pytorch-cuda10.2")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "build/pytorch-cuda10.2.json" in p.stderr and "line 3 column" in p.stderr
    assert in_project(engines_copy, "show", "demo-pytorch-aarch64").returncode == 0
    check = in_project(engines_copy, "lock", "--check")  # a definition that does not read is an error (exit 2)
    assert check.returncode == 2 and "build/pytorch-cuda10.2.json" in check.stderr and "line 3 column" in check.stderr


def test_an_unknown_image_suggests_only_similar_aliases():
    p = cli("show", "pytorch-cuda99")
    assert p.returncode == 2 and "did you mean pytorch-cuda10.2?" in p.stderr
    assert "horovod" not in p.stderr and "demo-" not in p.stderr
    far = cli("show", "zzyzx")
    assert far.returncode == 2 and "no image named 'zzyzx'" in far.stderr and "did you mean" not in far.stderr


def test_an_image_over_a_framework_whose_file_is_broken_says_so(engines_copy):
    f = engines_copy / "engines/tensorflow.toml"
    edit(f, "[[engine.releases]]\nversion", "[[engine.releases]]\nverison = 1\nversion")
    m = load(engines_copy, strict=False)
    kf = next(b for b in m.broken if b.alias == "kungfu-tf1.13")
    assert "field framework: engines/tensorflow.toml (the tensorflow family) does not load" in kf.reason()
    assert "pytorch-cuda10.2" in {i.alias for i in m.images}  # the others stay usable
    with pytest.raises(MatrixError, match="unknown key 'verison' \\(did you mean 'version'\\?\\)"):
        m.get("tensorflow-cuda10.1")  # not an image any more: the file's problem is named instead


def test_a_framework_no_family_has_is_a_dangling_reference(engines_copy):
    edit(engines_copy / "engines/kungfu.toml", 'framework = "tensorflow"', 'framework = "tensorflw"')
    msg = refusal(engines_copy).message
    assert "image kungfu-tf1.13" in msg and "no engine family 'tensorflw' in engines/ (did you mean 'tensorflow'?)" in msg


def test_the_compatibility_facts_file_is_told_the_same_way(engines_copy):
    f = engines_copy / "engines/checks/compat.toml"
    edit(f, "min_driver = ", "min_drivr = ")
    msg = refusal(engines_copy).message
    assert f"engines/checks/compat.toml:{line_of(f, 'min_drivr = ')}:" in msg
    assert "unknown key 'min_drivr' (did you mean 'min_driver'?)" in msg and "required" not in msg


@pytest.mark.network
def test_an_image_as_of_its_time_gets_the_dependencies_of_its_time(engines_copy):
    from packaging.version import Version

    from enginefab.core.pytarget import Target
    from enginefab.lock import pypi
    from enginefab.lock.asof import as_of

    def closure(m) -> dict[str, str]:
        img = m.get("demo-pytorch-aarch64")
        when = as_of(img, m.platforms.pypi)
        pins = pypi.resolve_versions(list(img.d.requirements), list(img.d.constraints),
                                     Target(python=img.d.python, arch=img.arch, glibc=img.os.glibc),
                                     image=img.alias, session=session_for(m.root), exclude_newer=when.instant)
        return {p.name: p.version for p in pins}

    committed = json.loads((engines_copy / "build/demo-pytorch-aarch64.json").read_text())
    locked = {i["name"]: i["version"] for la in committed["layers"] for i in la["inputs"] if i["kind"] == "wheel"}
    assert closure(load(engines_copy))["numpy"] == locked["numpy"]  # the matrix-wide instant: the committed lock
    edit(engines_copy / "engines/pytorch.toml", 'description = "PyTorch 1.8.0 (CPU)',
         'as_of = "2021-03-10"\ndescription = "PyTorch 1.8.0 (CPU)')
    then = closure(load(engines_copy))
    assert Version(then["numpy"]) < Version(locked["numpy"]) and then["torch"] == "1.8.0"
    assert Version(then["typing-extensions"]) < Version(locked["typing-extensions"])


LOCATED = '''top = 1  # <top>
[engine]
name = "x"  # <engine.name>
[[engine.releases]]
version = "1"
builds = [
  { accelerator = "cuda", arches = ["x86_64"] },  # <builds[1]>
  { accelerator = "cpu", arches = ["x86"] },  # <builds[2]>
]
[[image]]
alias = "a"
files = [{ name = "f", sha256 = "0" }]  # <image[1].files[1]>
[[image]]  # <image[2]>
alias = "b"  # <image[2].alias>
[[image.files]]
name = "g"
sha256 = "1"  # <image[2].files[1].sha256>
[[image.files]]  # <image[2].files[2]>
name = "h"
[os."debian-12"]  # <os>
suit = "x"  # <os.suit>
[os."debian-12".base.x86_64]
digest = "y"  # <os.base.digest>
'''


@pytest.mark.parametrize("loc,marker", [
    (("top",), "top"), (("engine", "name"), "engine.name"),
    (("engine", "releases", 0, "builds", 0, "arches"), "builds[1]"),
    (("engine", "releases", 0, "builds", 1, "arches"), "builds[2]"),
    (("image", 0, "files", 0, "sha256"), "image[1].files[1]"), (("image", 1, "alias"), "image[2].alias"),
    (("image", 1, "files", 0, "sha256"), "image[2].files[1].sha256"), (("image", 1, "files", 1), "image[2].files[2]"),
    (("image", 1, "no_such_key"), "image[2]"), (("os", "debian-12", "suit"), "os.suit"), (("os", "debian-12"), "os"),
    (("os", "debian-12", "base", "x86_64", "digest"), "os.base.digest"),
])
def test_a_problem_points_at_the_line_that_sets_it(loc, marker):
    from enginefab.engines.locate import TomlText

    want = next(n for n, line in enumerate(LOCATED.splitlines(), 1) if line.endswith(f"# <{marker}>"))
    assert TomlText(LOCATED).line_of(loc) == want


def test_a_broken_manual_pins_file_is_named_without_a_traceback(engines_copy):
    (engines_copy / "engines/manual-pins.toml").write_text('[files."KungFu-0.2.2.tar.gz"\nsha256 = "0"\n')
    p = in_project(engines_copy, "lock", "--check")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "engines/manual-pins.toml:1: not valid TOML, column" in p.stderr


@pytest.mark.parametrize("written,meant", [("arm64", "aarch64"), ("x86-64", "x86_64")])
def test_a_value_outside_the_choices_offers_the_one_meant(engines_copy, written, meant):
    f = engines_copy / "engines/pytorch.toml"
    edit(f, 'arch = "aarch64"', f'arch = "{written}"')
    msg = refusal(engines_copy).message
    assert f"field arch: '{written}' is not one of x86_64, aarch64 (did you mean '{meant}'?)" in msg
    setting = f'arch = "{written}"'
    assert f"engines/pytorch.toml:{line_of(f, setting)}:" in msg


def test_a_smoke_script_line_that_looks_like_a_table_is_no_table():
    from enginefab.engines.locate import TomlText

    text = """[engine]\nsmoke = '''\n[x for x in range(3)]\n'''\nimport_nam = "x"\n[[engine.releases]]\nversion = "1"\n"""
    assert TomlText(text).line_of(("engine", "import_nam")) == 5
