"""Canonical names: every name in the matrix and the historical spellings round-trip exactly."""

import pytest

from enginefab.engines.names import NameError_


@pytest.fixture(scope="module")
def parse(matrix):
    """The matrix's name grammar: engine names come from engines/, not from the code."""
    return matrix.grammar.parse

HISTORICAL = [
    "mindspore_1.3.0-cuda_10.1-py_3.7-ubuntu_1804-x86_64",
    "tensorflow_1.15-cann_5.0.2-py_3.7-euler_2.8.3-aarch64",
    "KF-0.2.2-TF-1.13.1-python3.6",
    "horovod_0.20.0-tensorflow_2.1.0-cuda_10.1-py_3.7-ubuntu_18.04-x86_64",
]


def test_every_matrix_name_round_trips(matrix, parse):
    for img in matrix.images:
        if not img.derived:  # a derived image's name is its own (docs/matrix.md), no grammar applies
            assert parse(img.name).format() == img.name


@pytest.mark.parametrize("name", HISTORICAL)
def test_historical_spellings_round_trip(name, parse):
    assert parse(name).format() == name


def test_historical_spellings_mean_the_same_thing(parse):
    compact = parse("mindspore_1.3.0-cuda_10.1-py_3.7-ubuntu_1804-x86_64")
    dotted = parse("mindspore_1.3.0-cuda_10.1-py_3.7-ubuntu_18.04-x86_64")
    assert compact == dotted and compact.os_version == "18.04"
    tf = parse("tensorflow_1.15-cann_5.0.2-py_3.7-euler_2.8.3-aarch64")
    assert (tf.engine, tf.engine_version, tf.os, tf.accelerator) == ("tensorflow", "1.15", "euleros", "cann")
    kf = parse("KF-0.2.2-TF-1.13.1-python3.6")
    assert (kf.engine, kf.engine_version, kf.framework, kf.framework_version, kf.python) == (
        "kungfu", "0.2.2", "tensorflow", "1.13.1", "3.6")
    hvd = parse(HISTORICAL[3])
    assert (hvd.engine, hvd.framework, hvd.framework_version) == ("horovod", "tensorflow", "2.1.0")


def test_matrix_lookup_accepts_any_spelling(matrix):
    assert matrix.get("mindspore_1.3.0-cuda_10.1-py_3.7-ubuntu_18.04-x86_64").alias == "mindspore-cuda10.1"


@pytest.mark.parametrize("bad,needle", [
    ("pytorch-cuda_10.2-x86_64", "not of the form name_version"),
    ("caffe_1.0-cpu-py_3.7-ubuntu_18.04-x86_64", "must be an engine"),
    ("pytorch_1.8.0-py_3.7-py_3.8-x86_64", "python given twice"),
    ("pytorch_1.8.0-gpu_10.2-x86_64", "unknown component 'gpu_10.2'"),
])
def test_bad_names_say_which_part_is_wrong(bad, needle, parse):
    with pytest.raises(NameError_, match=needle):
        parse(bad)
