"""The typed matrix: listing, lookup, and validation errors that name image, field and rule."""

import json
import re
import tomllib

import pytest

from enginefab.core.errors import MatrixError
from enginefab.engines.matrix import Matrix, load
from tests.conftest import ROOT, cli

PRESETS = {
    "tensorflow_2.1.0-cuda_10.1-py_3.7-ubuntu_18.04-x86_64",
    "pytorch_1.8.0-cuda_10.2-py_3.7-ubuntu_18.04-x86_64",
    "mindspore_1.3.0-cann_5.0.2-py_3.7-euler_2.8.3-aarch64",
    "tensorflow_1.15-cann_5.0.2-py_3.7-euler_2.8.3-aarch64",
    "mindspore_1.3.0-cuda_10.1-py_3.7-ubuntu_1804-x86_64",
    "horovod_0.20.0-tensorflow_2.1.0-cuda_10.1-py_3.7-ubuntu_18.04-x86_64",
    "horovod_0.22.1-pytorch_1.8.0-cuda_10.2-py_3.7-ubuntu_18.04-x86_64",
    "KF-0.2.2-TF-1.13.1-python3.6",
}
KEYS = {"name", "alias", "engine", "engine_version", "framework", "framework_version", "accelerator",
        "accelerator_version", "python", "os", "os_version", "arch"}


def test_list_json_has_all_presets_and_demos():
    rows = json.loads(cli("list", "--json", check=True).stdout)
    names = {r["name"] for r in rows}
    assert PRESETS <= names
    demos = [r for r in rows if r["demo"]]
    assert {d["arch"] for d in demos} == {"x86_64", "aarch64"}
    for r in rows:
        assert KEYS <= set(r), r["alias"]
    assert len({r["alias"] for r in rows}) == len(rows)
    by = {r["name"]: r for r in rows}
    hvd = by["horovod_0.20.0-tensorflow_2.1.0-cuda_10.1-py_3.7-ubuntu_18.04-x86_64"]
    assert (hvd["engine"], hvd["engine_version"], hvd["framework"], hvd["framework_version"]) == (
        "horovod", "0.20.0", "tensorflow", "2.1.0")
    kf = by["KF-0.2.2-TF-1.13.1-python3.6"]
    assert (kf["engine"], kf["engine_version"], kf["framework"], kf["framework_version"]) == (
        "kungfu", "0.2.2", "tensorflow", "1.13.1")
    pt = by["pytorch_1.8.0-cuda_10.2-py_3.7-ubuntu_18.04-x86_64"]
    assert (pt["framework"], pt["accelerator"], pt["accelerator_version"]) == ("pytorch", "cuda", "10.2")
    assert by["mindspore_1.3.0-cann_5.0.2-py_3.7-euler_2.8.3-aarch64"]["accelerator"] == "cann"


def test_list_piped_into_a_file_keeps_every_name_whole():
    rows = json.loads(cli("list", "--json", check=True).stdout)
    table = cli("list", check=True).stdout.splitlines()[1:]  # stdout is a pipe here, not a terminal
    assert [[t for t in line.split() if t != "(demo)"][:2] for line in table] == [[r["alias"], r["name"]] for r in rows]


def test_show_json_lists_pinned_inputs(root):
    out = cli("show", "demo-pytorch-aarch64", "--json", check=True)
    d = json.loads(out.stdout)
    inputs = [i for layer in d["layers"] for i in layer["inputs"]]
    assert {i["kind"] for i in inputs} >= {"deb", "wheel"}
    for i in inputs:
        assert {"kind", "name", "version", "url", "sha256", "size"} <= set(i)
        assert re.fullmatch(r"[0-9a-f]{64}", i["sha256"]) and i["size"] > 0
    # canonical name works as well as the alias
    by_name = cli("show", "pytorch_1.8.0-cpu-py_3.9-debian_11-aarch64", "--json", check=True)
    assert by_name.stdout == out.stdout


def test_unknown_image_is_a_clear_error():
    p = cli("show", "pytorch-cuda99")
    assert p.returncode == 2
    assert "no image named 'pytorch-cuda99'" in p.stderr and "did you mean" in p.stderr


def edit(path, old, new, count=1):
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, count))


def load_error(proj) -> MatrixError:
    with pytest.raises(MatrixError) as e:
        load(proj)
    return e.value


def test_rejects_python_the_engine_publishes_no_build_for(engines_copy):
    edit(engines_copy / "engines/tensorflow.toml",
         'name = "tensorflow_2.1.0-cuda_10.1-py_3.7-ubuntu_18.04-x86_64"\nengine_version = "2.1.0"\npython = "3.7"',
         'name = "tensorflow_2.1.0-cuda_10.1-py_3.8-ubuntu_18.04-x86_64"\nengine_version = "2.1.0"\npython = "3.8"')
    engines_copy.joinpath("engines/platforms.toml").write_text(
        engines_copy.joinpath("engines/platforms.toml").read_text().replace(
            '[python."3.6-ubuntu-18.04"]',
            '[python."3.8-ubuntu-18.04"]\nversion = "3.8"\nos = "ubuntu-18.04"\nsource = "base"\n'
            'interpreter = "/usr/bin/python3.8"\nsite_packages = "/usr/lib/python3/dist-packages"\n\n'
            '[python."3.6-ubuntu-18.04"]'))
    e = load_error(engines_copy)
    assert e.image and "tensorflow-cuda10.1" in e.image
    assert "field python" in e.message and "publishes no build for Python 3.8" in e.message


def test_rejects_accelerator_version_the_engine_was_not_built_for(engines_copy):
    edit(engines_copy / "engines/pytorch.toml",
         'name = "pytorch_1.8.0-cuda_10.2-py_3.7-ubuntu_18.04-x86_64"\nengine_version = "1.8.0"\npython = "3.7"\n'
         'os = "ubuntu-18.04"\naccelerator = "cuda-10.2"',
         'name = "pytorch_1.8.0-cuda_10.1-py_3.7-ubuntu_18.04-x86_64"\nengine_version = "1.8.0"\npython = "3.7"\n'
         'os = "ubuntu-18.04"\naccelerator = "cuda-10.1"')
    e = load_error(engines_copy)
    assert "pytorch-cuda10.2" in e.image
    assert "field accelerator" in e.message and "not built for cuda 10.1" in e.message


def test_rejects_aarch64_on_cuda_without_an_aarch64_build(engines_copy):
    edit(engines_copy / "engines/pytorch.toml",
         'name = "pytorch_1.8.0-cpu-py_3.9-debian_11-aarch64"\nengine_version = "1.8.0"\npython = "3.9"\n'
         'os = "debian-11"\naccelerator = "cpu"',
         'name = "pytorch_1.8.0-cuda_10.2-py_3.9-debian_11-aarch64"\nengine_version = "1.8.0"\npython = "3.9"\n'
         'os = "debian-11"\naccelerator = "cuda-10.2-wheel"')
    e = load_error(engines_copy)
    assert "demo-pytorch-aarch64" in e.image
    assert "field arch" in e.message and "no aarch64 build for cuda" in e.message


def test_rejects_duplicate_alias(engines_copy):
    edit(engines_copy / "engines/mindspore.toml", 'alias = "mindspore-cuda10.1"', 'alias = "pytorch-cuda10.2"')
    e = load_error(engines_copy)
    assert "field alias" in e.message and "'pytorch-cuda10.2' is used twice" in e.message


def test_rejects_name_that_contradicts_fields(engines_copy):
    edit(engines_copy / "engines/pytorch.toml",
         'name = "pytorch_1.8.0-cuda_10.2-py_3.7-ubuntu_18.04-x86_64"',
         'name = "pytorch_1.8.0-cuda_10.2-py_3.6-ubuntu_18.04-x86_64"')
    e = load_error(engines_copy)
    assert "pytorch-cuda10.2" in e.image
    assert "field python: the name contradicts the fields" in e.message
    assert "says python '3.6', but the image's python is '3.7'" in e.message


def test_rejects_unknown_keys_naming_file_and_field(engines_copy):
    edit(engines_copy / "engines/kungfu.toml", 'alias = "kungfu-tf1.13"', 'alias = "kungfu-tf1.13"\npyton = "3.6"')
    e = load_error(engines_copy)
    assert "kungfu.toml" in e.message and "unknown key 'pyton'" in e.message and "kungfu-tf1.13" in e.image


def test_cli_reports_matrix_errors_without_traceback(engines_copy):
    edit(engines_copy / "engines/mindspore.toml", 'alias = "mindspore-cuda10.1"', 'alias = "pytorch-cuda10.2"')
    p = cli("show", "pytorch-cuda10.2", cwd=engines_copy, env={"ENGINEFAB_ROOT": str(engines_copy)})
    assert p.returncode == 2 and "Traceback" not in p.stderr and "used twice" in p.stderr


def test_json_schema_export(tmp_path):
    cli("schema", "--out", str(tmp_path), check=True)
    schema = json.loads((tmp_path / "engine.schema.json").read_text())
    assert "image" in schema["properties"]


# -- Matrix.from_data and validate(): the matrix of parsed tables, its problems as a list ----------

def _tables() -> dict[str, dict]:
    return {p.name: tomllib.loads(p.read_text()) for p in sorted((ROOT / "engines").glob("*.toml"))}


def test_the_matrix_of_the_parsed_tables_is_the_loaded_one():
    m = Matrix.from_data(ROOT, _tables())
    loaded = load(ROOT)
    assert [i.summary() for i in m.images] == [i.summary() for i in loaded.images]
    assert len(m.images) >= 10 and m.validate() == []


def test_validate_lists_every_problem_with_its_rule_and_image():
    t = _tables()
    tf = next(i for i in t["tensorflow.toml"]["image"] if i["alias"] == "tensorflow-cuda10.1")
    tf["os"] = "ubuntu-1804"  # a dangling reference
    t["platforms.toml"]["stack"]["cuda-10.2"]["nccl"] = "2.4.8"  # a rule: NCCL older than its CUDA
    with pytest.raises(MatrixError) as e:
        Matrix.from_data(ROOT, t)
    assert "tensorflow-cuda10.1" in str(e.value) and "NCCL 2.4.8 predates CUDA 10.2" in str(e.value)
    found = Matrix.from_data(ROOT, t, strict=False).validate()
    by_rule = {v.rule: v for v in found}
    assert by_rule["reference"].image.startswith("tensorflow-cuda10.1 ") and "ubuntu-1804" in by_rule["reference"].message
    assert "ubuntu-18.04" in by_rule["reference"].fix
    assert by_rule["nccl-for-cuda"].image.startswith("pytorch-cuda10.2 ")
    assert "NCCL downloads" in by_rule["nccl-for-cuda"].source and by_rule["nccl-for-cuda"].fix == "use NCCL >= 2.5.6"
    assert found[0].rule == "reference", "root cause first"


def test_a_stack_naming_an_apt_repository_nobody_defines_is_refused_not_a_traceback():
    t = _tables()
    t["platforms.toml"]["stack"]["cuda-10.1"]["apt"] = ["nvidia-nowhere", "nvidia-ml-ubuntu1804"]
    with pytest.raises(MatrixError) as e:
        Matrix.from_data(ROOT, t)
    msg = str(e.value)
    assert "stack cuda-10.1 takes packages from apt repository 'nvidia-nowhere'" in msg, msg
    assert "add [apt.nvidia-nowhere]" in msg and "tensorflow-cuda10.1" in msg
