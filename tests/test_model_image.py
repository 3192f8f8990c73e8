"""Training and model images checked against ModelArts' rules (enginefab/check/modelarts.py).

Pure checks on hand-built Inventories first; then the demo model image (demo-model-x86_64:
derived from the x86_64 demo, plus one layer of its own from engines/files/demo-model — a NumPy
softmax regression behind the standard library's http.server), built by the demo session
fixture, served as the service serves it: in our sandbox (its own loopback-only network
namespace) and under podman. A server on another port and an image that runs as root fail,
citing the rule and its page (variants of its definition's config over the same files).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from enginefab.assemble import rootfs
from enginefab.assemble.builder import Builder
from enginefab.assemble.store import Store
from enginefab.check import container, conventions, modelarts, podman, serving, static
from enginefab.check.facts import Facts
from enginefab.check.inventory import Home, Inventory
from enginefab.core.errors import EnginefabError, LockError, MatrixError
from enginefab.demo import demo_images
from enginefab.core.pytarget import Target
from enginefab.engines.matrix import Matrix, load
from enginefab.lock import declared, layering
from enginefab.render import generate
from enginefab.render.context import ContextFile, write_context

from enginefab.core.definition import Definition, load_definition

from .conftest import ROOT, enginefab, session_for

MODEL = "demo-model-x86_64"

SP = "/usr/local/lib/python3.9/dist-packages"
PASSWD = (("root", "x", "0", "0", "root", "/root", "/bin/bash"),
          ("ma-user", "x", "1000", "100", "", "/home/ma-user", "/bin/bash"))
GROUP = (("root", "x", "0", ""), ("users", "x", "100", ""))


def _facts(**kw) -> Facts:
    base = dict(arch="x86_64", glibc="2.31", env={"PYTHONUNBUFFERED": "1"}, accelerator="cpu", stack_provides=[],
                host_provides=[], python=Target(python="3.9", arch="x86_64", glibc="2.31"), site_packages=SP,
                pins={}, kind="model", cmd=["sh", "/home/mind/run.sh"], exposed_ports=["8080/tcp"])
    return Facts(**{**base, **kw})


def _inv(**kw) -> Inventory:
    base = dict(elves=(), names_in_dir={}, passwd=PASSWD, group=GROUP, home=Home("/home/ma-user", True, (1000, 100)),
                dirs={"/home/mind/model": Home("/home/mind/model", True, (0, 0), 0o755)},
                exists=frozenset({"/bin/sh", "/home/mind/run.sh"}))
    return Inventory(**{**base, **kw})


def test_a_model_images_command_port_and_model_dir_pass_or_cite_their_rule():
    ok = conventions.model(_inv(), _facts())
    assert [(r.name, r.status) for r in ok] == [("modelarts-model-command", "pass"), ("modelarts-model-port", "pass"),
                                               ("modelarts-model-dir", "pass")]
    assert ok[0].detail == "sh /home/mind/run.sh: /bin/sh, /home/mind/run.sh in the image"
    bad = conventions.model(_inv(exists=frozenset({"/bin/sh"}), dirs={}),
                            _facts(exposed_ports=["8081/tcp"]))
    cmd, port, mdir = (r.detail for r in bad)
    assert all(r.status == "fail" for r in bad)
    assert cmd == (f"sh /home/mind/run.sh: /home/mind/run.sh is not in the image [{modelarts.COMMAND.cite()}]")
    assert port.startswith("ExposedPorts is 8081/tcp, not 8080/tcp [ModelArts: a model image serves on port 8080")
    assert "specifications_for_custom_images_used_for_importing_models.html" in port
    assert mdir == f"/home/mind/model does not exist [{modelarts.MODEL_DIR.cite()}]"
    none = conventions.model(_inv(), _facts(cmd=[]))[0]
    assert none.status == "fail" and none.detail.startswith("the image has no Entrypoint or Cmd [ModelArts:")
    onpath = conventions.model(_inv(exists=frozenset({"/usr/bin/python3.9"})), _facts(cmd=["python3.9", "-m", "x"]))[0]
    assert onpath.status == "pass" and onpath.detail == "python3.9 -m x: /usr/bin/python3.9 in the image"
    private = {"/home/mind/model": Home("/home/mind/model", True, (0, 0), 0o700)}
    (unreadable,) = [r for r in conventions.model(_inv(dirs=private), _facts()) if r.name == "modelarts-model-dir"]
    assert unreadable.status == "fail" and unreadable.detail.startswith(
        "/home/mind/model (mode 700, 0:0) cannot be listed by ma-user 1000:100 [ModelArts: the model package")
    assert conventions.model(_inv(), _facts(kind="training")) == []


def test_the_size_limit_is_the_kinds_training_9_5_gb_model_10_gb():
    big = _inv(size=9_700_000_000)
    training = conventions.size(big, _facts(kind="training"))
    assert training.status == "fail"
    assert training.detail == f"9.70 GB unpacked, over 9.5 GB [{modelarts.SIZE_TRAINING.cite()}]"
    assert "specifications_for_custom_images_used_for_training_jobs.html" in training.detail
    model = conventions.size(big, _facts())
    assert (model.status, model.detail) == ("pass", "9.70 GB unpacked, within the model limit of 10 GB")
    assert conventions.size(_inv(size=10_000_000_001), _facts()).status == "fail"


def test_the_hwhiaiuser_clash_and_a_missing_gid_100_are_named_with_the_fix():
    ascend = (("root", "x", "0", "0", "", "/root", "/bin/sh"),
              ("HwHiAiUser", "x", "1000", "1000", "", "/home/HwHiAiUser", "/bin/sh"))
    r = conventions.modelarts(_inv(passwd=ascend, group=(("root", "x", "0", ""),)), _facts())
    assert r.status == "fail"
    assert r.detail.startswith("uid 1000 is HwHiAiUser (gid 1000, home /home/HwHiAiUser), not ma-user gid 100 home "
                               "/home/ma-user (Ascend bases create HwHiAiUser with uid 1000: rename it to ma-user or "
                               "move it to another uid in a layer of the image), /etc/group has no group with gid 100 "
                               "[ModelArts: the image's user is ma-user, uid 1000")


def _seen(**kw) -> serving.Seen:
    base = dict(listening=[("0.0.0.0", 8080)], status=200, body='{"health": "true"}', error=None, listen_seconds=1.0,
                healthy_seconds=1.2, exited=None, ids=(1000, 100), sigterm=0.3)
    return serving.Seen(**{**base, **kw})


MA_USER = container.User(1000, 100, (100,), "/home/ma-user", "ma-user")


def test_health_results_name_what_the_service_would_see():
    user, ok = serving.results("1000:100", MA_USER, _seen())
    assert (user.status, ok.status) == ("pass", "pass")
    assert ok.detail == ('as 1000:100, listening on 0.0.0.0:8080 after 1 s, GET /health → 200 {"health": "true"} '
                         "after 1.2 s; stopped 0.3 s after SIGTERM")
    _, local = serving.results("1000:100", MA_USER, _seen(listening=[("127.0.0.1", 8080)]))
    assert local.status == "fail" and local.detail.startswith("listens on 127.0.0.1:8080, not 0.0.0.0:8080")
    _, sick = serving.results("1000:100", MA_USER, _seen(status=200, body='{"health": "false"}'))
    assert sick.status == "fail" and "GET /health answered status 200, body '{\"health\": \"false\"}'" in sick.detail
    assert modelarts.HEALTH.cite() in sick.detail
    _, died = serving.results("1000:100", MA_USER, _seen(listening=[], listen_seconds=None, exited=1, sigterm=None),
                              stderr="Traceback …\nModuleNotFoundError: No module named 'flask'")
    assert died.detail.startswith("the server exited with status 1 before listening on 8080; its output ends: "
                                  "Traceback …\nModuleNotFoundError: No module named 'flask' [ModelArts: a model image")
    _, stubborn = serving.results("1000:100", MA_USER, _seen(sigterm=None))
    assert stubborn.status == "warn" and "did not stop within 10 s of SIGTERM" in stubborn.detail
    assert serving.Seen.parse("ENGINEFAB-SERVE {not json") is None


def model_definition(*, user: str | None = None, env: dict | None = None) -> Definition:
    """The demo model's committed definition, its config's user or environment changed."""
    d = load_definition(ROOT / "build" / f"{MODEL}.json")
    config = d.config.model_copy(update={"user": user or d.config.user, "env": {**d.config.env, **(env or {})}})
    return d.model_copy(update={"config": config})


@pytest.fixture(scope="module")
def model_image(demo_build, tmp_path_factory):
    """The demo model image, built over the session's x86_64 demo in its store: one layer."""
    p = enginefab("build", MODEL, "--store", str(demo_build["store"]), "--out", str(tmp_path_factory.mktemp("model")),
                  "--json", check=True)
    (res,) = json.loads(p.stdout)
    # the parent's layers are the session's, reused as they are: the model's own layer is the only one packed
    base, own = res["layer_results"]
    assert base["kind"] == "base" and base["status"] == "cached" and own["id"].startswith("add/"), res
    defn = model_definition()
    store = Store(demo_build["store"])
    built = Builder(store, session=session_for()).image(defn)  # every layer is in the store: a cache hit
    assert built.digest == res["digest"]
    return {"defn": defn, "store": store, "built": built, "root": rootfs.unpacked(store, built)}


def test_the_model_image_passes_every_check_level_and_answers_health_in_the_sandbox(model_image, demo_build):
    """`enginefab check` of the demo model, every level: the ModelArts rules, the engine probe, and
    the model served as uid 1000 on 0.0.0.0:8080 answering GET /health."""
    p = enginefab("check", MODEL, "--store", str(demo_build["store"]), "--json")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    (rep,) = json.loads(p.stdout)
    res = {r["name"]: r for r in rep["results"]}
    for name in ("modelarts-conventions", "modelarts-size", "modelarts-model-command", "modelarts-model-port",
                 "modelarts-model-dir", "import-pytorch", "model-user", "model-health"):
        assert res[name]["status"] == "pass", res[name]
    assert {r["status"] for r in rep["results"]} == {"pass", "skip"}  # the accelerator level: no GPU here
    assert 1.5e9 < res["modelarts-size"]["data"]["bytes"] < 2.5e9
    health = res["model-health"]["data"]
    assert health["listening"] == ["0.0.0.0:8080"] and health["ids"] == [1000, 100]
    assert health["status"] == 200 and json.loads(health["body"]) == {"health": "true"}
    assert "GET /health HTTP/1.1\" 200" in health["server_output"]  # the server's log went to its stdout
    assert health["sigterm_seconds"] is not None and health["sigterm_seconds"] < 10
    # its lower layers are the parent's, byte for byte
    blob = lambda d: json.loads((demo_build["store"] / "blobs/sha256" / d.split(":")[1]).read_bytes())  # noqa: E731
    mine, parent = blob(model_image["built"].digest)["layers"], blob(demo_build["digests"]["demo-pytorch-x86_64"])["layers"]
    assert mine[:-1] == parent and len(mine) == len(parent) + 1


def test_the_demo_model_predicts(model_image):
    """Its server answers POST /predict with the model's labels and scores (inside the sandbox)."""
    script = (
        "sh /home/mind/run.sh & /usr/bin/python3.9 - <<'PY'\n"
        "import json, time, urllib.request\n"
        "for _ in range(100):\n"
        "    try:\n"
        "        urllib.request.urlopen('http://127.0.0.1:8080/health'); break\n"
        "    except OSError: time.sleep(0.1)\n"
        "body = json.dumps({'instances': [[3, 0.5], [-1, -2], [-2, 1]]}).encode()\n"
        "print(urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:8080/predict', data=body)).read().decode())\n"
        "PY\n"
        "kill $!\n")
    r = container.run(model_image["defn"], model_image["root"], ["bash", "-c", script], entrypoint=False, timeout=120)
    assert r.returncode == 0, r.stderr
    answer = json.loads(r.stdout.splitlines()[-1])
    assert [p["label"] for p in answer["predictions"]] == ["north-east", "south-west", "north-west"]
    assert all(abs(sum(p["scores"]) - 1) < 1e-5 for p in answer["predictions"])


def test_a_server_on_another_port_and_an_image_running_as_root_fail_citing_the_rule(model_image):
    root = model_image["root"]  # the same files; only the image config differs
    _, elsewhere = serving.check(model_definition(env={"PORT": "8081"}), root, limit=6)
    assert elsewhere.status == "fail"
    assert elsewhere.detail.startswith("nothing listened on port 8080 within 6 s (listening: 0.0.0.0:8081)")
    assert elsewhere.detail.endswith(f"[{modelarts.PORT.cite()}]")
    as_root, health = serving.check(model_definition(user="0:0"), root, limit=30)
    assert as_root.status == "fail" and health.status == "pass"  # served as 1000 it works; the image says root
    assert as_root.detail.startswith("the image's User '0:0' runs its server as root (0:0) under docker or podman, "
                                     "while ModelArts starts it as ma-user 1000:100: set the image's user to 1000:100")
    assert as_root.detail.endswith(f"[{modelarts.USER.cite()}]")
    static_root = {r.name: r for r in static.audit(root, Facts.of(model_definition(user="0:0")))}
    assert static_root["modelarts-conventions"].detail.startswith("config User is '0:0', not 1000:100 [ModelArts:")


# -- the [[image]] fields: kind, cmd, ports, add ------------------------------------------------

def _tables() -> dict[str, dict]:
    import tomllib

    return {p.name: tomllib.loads(p.read_text()) for p in sorted((ROOT / "engines").glob("*.toml"))}


def _as_model(t: dict, add: list[dict]) -> dict:
    (img,) = [i for i in t["pytorch.toml"]["image"] if i["alias"] == "demo-pytorch-x86_64"]
    img.update(kind="model", cmd=["sh", "/home/mind/run.sh"], ports=["8080/tcp"], add=add)
    return t


DEMO_ADD = [{"path": "/bin/sh", "link": "bash"},
            {"path": "/home/mind/run.sh", "source": "files/demo-model/run.sh", "mode": 0o755},
            {"path": "/home/mind/model/model.json", "source": "files/demo-model/model.json"}]


def test_add_puts_the_projects_files_in_one_layer_on_top():
    m = Matrix.from_data(ROOT, _as_model(_tables(), DEMO_ADD))
    img = m.get("demo-pytorch-x86_64")
    files = declared.added_files(img, ROOT)
    assert [(f.path, f.type, f.mode) for f in files] == [
        ("/bin", "dir", 0o755), ("/bin/sh", "symlink", 0o777), ("/home", "dir", 0o755), ("/home/mind", "dir", 0o755),
        ("/home/mind/model", "dir", 0o755), ("/home/mind/model/model.json", "file", 0o644),
        ("/home/mind/run.sh", "file", 0o755)]
    assert files[-1].content == (ROOT / "engines/files/demo-model/run.sh").read_text()
    top = layering.plan_image(layering.Parts(alias="x", added=files))[-1]
    assert top.kind == "files" and top.id.startswith("add/files-") and top.files == files
    # the demos' matrix entries leave the new fields out at their defaults: their locks do not change
    plain = declared.matrix_entry(load(ROOT).get("demo-pytorch-x86_64"), load(ROOT))["image"]
    assert not {"kind", "cmd", "ports", "add"} & set(plain)
    assert declared.matrix_entry(img, m)["image"]["kind"] == "model"


def test_add_refuses_what_is_not_a_text_file_inside_engines(engines_copy):
    (engines_copy / "engines/files/leak").symlink_to("/etc/hostname")
    (engines_copy / "engines/files/blob").write_bytes(b"\xff\xfe\x00binary")
    for source, said in (("files/leak", "engines/files/leak is not a file inside engines/"),
                         ("files/blob", "not UTF-8 text"), ("files/none.py", "is not a file inside engines/")):
        m = Matrix.from_data(engines_copy, _as_model(_tables(), [{"path": "/x", "source": source}]))
        with pytest.raises(LockError) as e:
            declared.added_files(m.get("demo-pytorch-x86_64"), engines_copy)
        assert said in e.value.message and e.value.image == "demo-pytorch-x86_64" and e.value.fix
    for bad, why in (({"path": "/x", "source": "../../etc/passwd"}, "field add[1].source: '../../etc/passwd' is not "
                      "allowed: a file under engines/ is a relative path"),
                     ({"path": "/x"}, "give either source"), ({"path": "/x", "link": "y", "source": "z"}, "give either"),
                     ({"path": "x", "link": "y"}, "field add[1].path")):
        with pytest.raises(MatrixError) as e:
            Matrix.from_data(ROOT, _as_model(_tables(), [bad]))
        assert why in str(e.value), str(e.value)


def test_the_demo_model_is_part_of_dev_demo():
    assert [i.alias for i in demo_images(load(ROOT))] == ["demo-pytorch-x86_64", "demo-pytorch-aarch64", MODEL]


def test_plan_shows_the_model_sharing_every_layer_of_its_parent(model_image, demo_build):
    rep = json.loads(enginefab("plan", "demo-pytorch-x86_64", MODEL, "--store", str(demo_build["store"]), "--json",
                               check=True).stdout)
    own = [la for la in rep["layers"] if la["images"] == [MODEL]]
    assert [la["id"] for la in own] == [la.id for la in model_image["defn"].layers if la.id.startswith("add/")]
    assert all(la["size_source"] == "built" for la in rep["layers"])
    parent = next(i for i in rep["images"] if i["alias"] == "demo-pytorch-x86_64")
    assert rep["totals"]["saved_by_sharing"] == parent["size"]  # a registry stores the parent's layers once


# -- a rendered Dockerfile of the demo model, built by podman against a local registry -------------

def _podman_config(podman_, image: str) -> dict:
    p = podman_("image", "inspect", image, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)[0]["Config"]


@pytest.mark.slow
def test_a_rendered_dockerfile_of_the_model_builds_with_podman_and_passes_the_same_checks(model_image, demo_build,
                                                                                        registry, tmp_path):
    """The parent pushed to a registry on 127.0.0.1, `render dockerfile --parent` of the model, `podman
    build` (FROM the parent by digest, pulled from that registry; COPY of the model's layer), then the
    static rules on podman's image tree and the health check, in our sandbox and under podman itself
    (podman runc serving the image with --network=none, probed inside the container with `podman
    exec`: the same ports, /health answer and SIGTERM stop as in our sandbox — `check --cross-check`'s
    code, here on podman's own image so that one vfs copy of 1.7 GB serves both halves of the test)."""
    if podman.missing("x86_64"):
        pytest.fail(f"podman is needed here: {podman.missing('x86_64')}")
    pushed = json.loads(enginefab("push", "demo-pytorch-x86_64", "--to", f"{registry.host}/enginefab", "--plain-http",
                                  "--store", str(demo_build["store"]), "--json", check=True).stdout)
    repo = pushed["images"][0]["reference"].split("@")[0].rsplit(":", 1)[0]  # 127.0.0.1:PORT/enginefab/pytorch
    ctx = tmp_path / "ctx"
    enginefab("render", "dockerfile", MODEL, "--parent", repo, "--out", str(ctx), check=True)
    text = (ctx / "Dockerfile").read_text()
    assert f"FROM {repo}@{demo_build['digests']['demo-pytorch-x86_64']}" in text and "COPY files/0/ /" in text
    store = model_image["store"]
    base = Path(tempfile.mkdtemp(prefix="enginefab-podman-", dir=store.root / "tmp"))
    run = podman.run_dir()
    try:
        pod = podman.Podman(base, run)
        built = pod("build", "--tls-verify=false", "--signature-policy", str(base / "policy.json"), "--layers=false",
                    "-t", "localhost/model", str(ctx), timeout=1800)
        assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
        config = _podman_config(pod, "localhost/model")
        assert config["User"] == "1000:100" and config["Cmd"] == ["sh", "/home/mind/run.sh"]
        assert "8080/tcp" in config["ExposedPorts"] and config["WorkingDir"] == "/home/ma-user"
        assert set(config["Env"]) == {f"{k}={v}" for k, v in model_image["defn"].config.env.items()}
        mounted = pod("image", "mount", "localhost/model", timeout=300)
        assert mounted.returncode == 0, mounted.stderr
        tree = Path(mounted.stdout.strip())
        theirs = model_image["defn"]  # podman's config (checked equal above) over podman's files
        audit = {r.name: r for r in static.audit(tree, Facts.of(theirs))}
        for name in ("modelarts-conventions", "modelarts-size", "modelarts-model-command", "modelarts-model-port",
                     "modelarts-model-dir", "elf-arch", "dt-needed"):
            assert audit[name].status == "pass", audit[name]
        user, health = serving.check(theirs, tree, limit=30)
        assert (user.status, health.status) == ("pass", "pass"), health
        served = podman._serve_result(pod, "localhost/model", theirs, tree, limit=30, timeout=600)
        assert served.status == "pass", served
        assert served.detail == ('podman (runc) agrees: listening on 0.0.0.0:8080, GET /health → status 200 '
                                 '{"health": "true"}, stopped by SIGTERM')
        assert served.data["podman"] == served.data["ours"]
        assert "GET /health HTTP/1.1\" 200" in served.data["server_output"]  # podman logs: the server's stdout
        pod("image", "unmount", "localhost/model", timeout=120)
    finally:
        for d in (run, base):
            podman._unmount_below(d)
            shutil.rmtree(d, ignore_errors=True)


def test_render_of_a_derived_image_starts_from_the_parent_by_digest_and_copies_its_layer(tmp_path):
    d = model_definition()
    with pytest.raises(EnginefabError) as e:
        generate.dockerfile(d)
    assert "derived from the matrix image demo-pytorch-x86_64" in e.value.message and "--parent" in e.value.fix
    files = generate.dockerfile(d, "127.0.0.1:5000/enginefab/pytorch")
    text = files["Dockerfile"].text
    assert f"FROM 127.0.0.1:5000/enginefab/pytorch@{d.parent.manifest}\n" in text
    assert "COPY files/0/ /\n" in text and "EXPOSE 8080/tcp\n" in text and 'CMD ["sh", "/home/mind/run.sh"]' in text
    assert "RUN " not in text  # the parent has no /bin/sh: nothing may need one
    write_context(files, tmp_path / "ctx")
    ctx = tmp_path / "ctx" / "files" / "0"
    assert os.readlink(ctx / "bin/sh") == "bash"
    assert stat.S_IMODE((ctx / "home/mind/run.sh").stat().st_mode) == 0o755
    assert (ctx / "home/mind/serve.py").read_text() == (ROOT / "engines/files/demo-model/serve.py").read_text()
    with pytest.raises(EnginefabError):
        write_context({"../escape": ContextFile("x")}, tmp_path / "ctx2")
    assert not (tmp_path / "escape").exists()
    # a layer's link to a directory outside, then a file below it: never written through the link
    (tmp_path / "outside").mkdir()
    hostile = {"files/0/bin": ContextFile(link=str(tmp_path / "outside")), "files/0/bin/sh": ContextFile("x")}
    with pytest.raises(EnginefabError):
        write_context(hostile, tmp_path / "ctx3")
    assert list((tmp_path / "outside").iterdir()) == []
