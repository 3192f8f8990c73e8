"""Run-step layers on a real image: a script runs over the aarch64 demo's layers (under qemu-user in
the sandbox, network cut), creates, changes and deletes files; the layer is the normalized diff (OCI
whiteouts, an opaque directory), the same bytes when run again elsewhere, and umoci applies it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile

import pytest

from enginefab.assemble.rootfs import open_layer
from enginefab.core import canonical
from enginefab.core.definition import Input, Layer
from tests.conftest import definition_file, demo_definition, enginefab

pytestmark = pytest.mark.slow
AARCH64 = "demo-pytorch-aarch64"
SITE = "usr/local/lib/python3.9/dist-packages"

SCRIPT = r"""set -e
mkdir -p /opt/made && echo "made by a step" > /opt/made/new.txt
echo "$SOURCE_DATE_EPOCH $TZ $(cat /proc/sys/kernel/hostname)" > /opt/made/env.txt
echo "builder:x:999:999::/nonexistent:/usr/sbin/nologin" >> /etc/passwd
chmod 700 /home/ma-user
rm /usr/local/bin/convert-caffe2-to-onnx
rm -rf /usr/local/lib/python3.9/dist-packages/torch/include
rm -rf /var/lib/dpkg/status.d/* && echo "Package: step" > /var/lib/dpkg/status.d/step
ln -s /etc/passwd /opt/made/passwd-link
ln /opt/made/new.txt /opt/made/hard.txt
cp /enginefab/inputs/typing_extensions-4.16.0-py3-none-any.whl /opt/made/input-copy.whl
if touch /enginefab/inputs/x 2>/dev/null; then echo yes > /opt/made/inputs-writable; fi
if echo x 2>/dev/null >> /enginefab/inputs/typing_extensions-4.16.0-py3-none-any.whl; then echo yes > /opt/made/input-writable; fi
python3.9 -c "
import socket
try:
    socket.create_connection(('pypi.org', 443), timeout=5)
    print('online')
except OSError:
    print('offline')
" > /opt/made/net.txt
echo scratch > /tmp/scratch.txt
"""


def run_input(name: str, script: str) -> Input:
    body = canonical.dumps({"script": script, "env": {}})
    return Input(kind="run", name=name, version="1", url=None, sha256=canonical.sha256_hex(body), size=len(script),
                 script=script)


def with_run_layer(defn, layers, name: str, script: str, extra: list[Input] = ()):
    layer = Layer(id=f"run/{name}", kind="run", inputs=[*extra, run_input(name, script)], comment="a test step")
    return defn.model_copy(update={"layers": [*layers, layer]})


def entries(blob, media_type) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
    out = {}
    with open_layer(blob, media_type) as f, tarfile.open(fileobj=f, mode="r|") as tf:
        for m in tf:
            out[m.name.rstrip("/")] = (m, tf.extractfile(m).read() if m.isreg() else None)  # type: ignore[union-attr]
    return out


@pytest.fixture(scope="module")
def run_build(demo_build, tmp_path_factory):
    base = tmp_path_factory.mktemp("run")
    defn = demo_definition(AARCH64)
    wheel = next(i for i in defn.inputs() if i.name == "typing-extensions")
    placed = Input(kind="url", name="typing-extensions-file", version=wheel.version, url=wheel.url,
                   sha256=wheel.sha256, size=wheel.size, filename=wheel.filename, dest="/opt/placed/te.whl")
    path = definition_file(with_run_layer(defn, defn.layers, "make-change-delete", SCRIPT, [placed]), base / "run.json")
    # a second store with the same lower layers, to run the step again elsewhere
    other = base / "other-store"
    shutil.copytree(demo_build["store"], other, copy_function=os.link,
                    ignore=shutil.ignore_patterns("rootfs", "tmp", "roots"))
    p = enginefab("build", str(path), "--store", str(demo_build["store"]), "--out", str(base / "layout"), "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    return {"path": path, "base": base, "other": other, "result": json.loads(p.stdout)[0], "wheel": wheel,
            "store": demo_build["store"]}


def test_run_step_layer_is_the_normalized_diff(run_build):
    r = run_build["result"]
    layer = r["layer_results"][-1]
    assert layer["status"] == "built" and [o["status"] for o in r["layer_results"][:-1]] == ["cached"] * 7
    blob = run_build["store"] / "blobs/sha256" / layer["digests"][0].split(":")[1]
    e = entries(blob, "application/vnd.oci.image.layer.v1.tar+gzip")

    def text(p: str) -> str:
        return e[p][1].decode()  # type: ignore[union-attr]

    assert text("opt/made/hard.txt") == "made by a step\n"  # the first of two hard links in path order
    assert text("opt/made/env.txt") == "1 UTC enginefab\n"  # SOURCE_DATE_EPOCH, TZ, host name are fixed
    assert text("opt/made/net.txt") == "offline\n"  # the network is cut
    assert "opt/made/inputs-writable" not in e and "opt/made/input-writable" not in e  # inputs are read-only
    assert hashlib.sha256(e["opt/made/input-copy.whl"][1]).hexdigest() == run_build["wheel"].sha256
    assert hashlib.sha256(e["opt/placed/te.whl"][1]).hexdigest() == run_build["wheel"].sha256  # dest: placed
    assert text("etc/passwd").endswith("builder:x:999:999::/nonexistent:/usr/sbin/nologin\n")
    home = e["home/ma-user"][0]
    assert (home.mode, home.uid, home.gid) == (0o700, 1000, 100)
    assert e["opt/made/passwd-link"][0].issym() and e["opt/made/passwd-link"][0].linkname == "/etc/passwd"
    assert e["opt/made/new.txt"][0].islnk() and e["opt/made/new.txt"][0].linkname == "opt/made/hard.txt"
    # deletions: a whiteout per deleted path (the topmost of a deleted tree), an opaque directory
    assert "usr/local/bin/.wh.convert-caffe2-to-onnx" in e
    assert f"{SITE}/torch/.wh.include" in e and not any(p.startswith(f"{SITE}/torch/include/") for p in e)
    assert "var/lib/dpkg/status.d/.wh..wh..opq" in e and text("var/lib/dpkg/status.d/step") == "Package: step\n"
    # the sandbox's own paths are not in the layer; every time is SOURCE_DATE_EPOCH; unchanged files are not there
    assert not any(p.split("/")[0] in ("tmp", "enginefab", "dev", "proc", "sys") for p in e)
    assert {m.mtime for m, _ in e.values()} == {1}
    assert f"{SITE}/torch/version.py" not in e and "usr/bin/python3.9" not in e


def test_run_step_layer_is_reproducible_and_applies(run_build, tmp_path):
    """Run again in another store, another umask and file-creation order: the same layer; umoci
    applies the whiteouts."""
    old = os.umask(0o027)
    try:
        p = enginefab("build", str(run_build["path"]), "--store", str(run_build["other"]), "--out",
                      str(tmp_path / "layout"), "--json", "--creation-order", "reverse", env={"TZ": "Asia/Tokyo"})
    finally:
        os.umask(old)
    assert p.returncode == 0, p.stderr
    again = json.loads(p.stdout)[0]
    assert again["layer_results"][-1]["status"] == "built"  # really ran again
    assert again["layer_results"][-1]["digests"] == run_build["result"]["layer_results"][-1]["digests"]
    assert again["digest"] == run_build["result"]["digest"]
    assert enginefab("validate", str(tmp_path / "layout")).returncode == 0
    dest = tmp_path / "unpacked"
    subprocess.run(["umoci", "unpack", "--image", f"{tmp_path / 'layout'}:{AARCH64}", str(dest)], check=True,
                   capture_output=True)
    root = dest / "rootfs"
    assert (root / "opt/made/new.txt").read_text() == "made by a step\n"
    assert not (root / "usr/local/bin/convert-caffe2-to-onnx").exists()
    assert not (root / SITE / "torch/include").exists() and (root / SITE / "torch/version.py").is_file()
    assert sorted(os.listdir(root / "var/lib/dpkg/status.d")) == ["step"]


def test_a_failing_step_names_itself_and_shows_its_output(demo_build, tmp_path):
    defn = demo_definition(AARCH64)
    path = definition_file(with_run_layer(defn, defn.layers[:1], "fail", "echo 'boom: no such thing' >&2\nexit 3\n"),
                           tmp_path / "fail.json")
    p = enginefab("build", str(path), "--store", str(demo_build["store"]), "--out", str(tmp_path / "l"))
    assert p.returncode == 2
    assert "input run:fail==1" in p.stderr and "exited with status 3" in p.stderr and "boom: no such thing" in p.stderr
    log = next((demo_build["store"] / "logs").glob("run_fail-fail*.log"))
    assert "boom" in log.read_text()


def test_a_run_step_over_an_unreachable_layer_is_blocked(demo_build, tmp_path):
    """A manual input nobody added makes its layer unreachable and the run step above it blocked;
    --reachable-layers builds the rest; a plain build stops at the input, naming the way out."""
    defn = demo_definition(AARCH64)
    manual = Input(kind="manual", name="vendor-sdk.run", version="1.0", url=None, sha256=None, size=0,
                   filename="vendor-sdk.run", where="the vendor's support site (login)")
    stack = Layer(id="stack/vendor", kind="archives", inputs=[manual])
    layers = [defn.layers[0], stack, *defn.layers[1:3]]
    path = definition_file(with_run_layer(defn, layers, "install-sdk", "sh /enginefab/inputs/vendor-sdk.run\n"),
                           tmp_path / "sdk.json")
    p = enginefab("build", str(path), "--store", str(demo_build["store"]), "--out", str(tmp_path / "l"))
    assert p.returncode == 2
    assert "input manual:vendor-sdk.run==1.0" in p.stderr and "--reachable-layers" in p.stderr, p.stderr
    p = enginefab("build", str(path), "--reachable-layers", "--store", str(demo_build["store"]), "--out",
                  str(tmp_path / "l"), "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)[0]
    assert [o["status"] for o in r["layer_results"]] == ["cached", "unreachable", "cached", "cached", "blocked"]
    assert r["digest"] is None and not (tmp_path / "l" / "index.json").exists()
    assert r["layer_results"][1]["input"] == "manual:vendor-sdk.run==1.0"
    p = enginefab("build", str(path), "--reachable-layers", "--store", str(demo_build["store"]), "--out",
                  str(tmp_path / "l"))
    assert p.stdout.strip().splitlines()[-1].startswith(f"{AARCH64} incomplete: 3 of 5 layers built here")


def test_a_native_step_runs_in_bubblewrap_alone(demo_build, tmp_path):
    """x86_64 over x86_64: no emulation, same sandbox rules (root, fixed host name, network cut,
    umask 022, inputs read-only), deletions as whiteouts."""
    defn = demo_definition("demo-pytorch-x86_64")
    wheel = next(i for i in defn.inputs() if i.name == "typing-extensions")
    inp = Input(kind="url", name="te", version=wheel.version, url=wheel.url, sha256=wheel.sha256, size=wheel.size,
                filename=wheel.filename)
    script = (f"set -e\necho \"$(id -u) $(cat /proc/sys/kernel/hostname) $SOURCE_DATE_EPOCH $(umask)\" > /root/who\n"
              "rm /etc/debian_version\nls /enginefab/inputs > /root/inputs\n"
              "cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' ' > /root/net\n"
              f"if echo x 2>/dev/null >> /enginefab/inputs/{wheel.filename}; then touch /root/writable; fi\n")
    path = definition_file(with_run_layer(defn, defn.layers[:1], "native", script, [inp]), tmp_path / "x86.json")
    p = enginefab("build", str(path), "--store", str(demo_build["store"]), "--out", str(tmp_path / "l"), "--json")
    assert p.returncode == 0, p.stderr
    layer = json.loads(p.stdout)[0]["layer_results"][-1]
    e = entries(demo_build["store"] / "blobs/sha256" / layer["digests"][0].split(":")[1],
                "application/vnd.oci.image.layer.v1.tar+gzip")
    assert sorted(e) == ["etc", "etc/.wh.debian_version", "root", "root/inputs", "root/net", "root/who"]
    assert e["root/who"][1] == b"0 enginefab 1 0022\n"
    assert e["root/inputs"][1].decode().split() == [wheel.filename]
    assert e["root/net"][1] == b"lo\n"  # only loopback: the network is cut
