"""Model-image definitions for tests: the committed x86_64 demo definition with the demo model's
files (engines/files/demo-model) added as one layer on top, and its config made a model image's."""

from __future__ import annotations

import hashlib
from pathlib import Path

from enginefab.core.definition import Definition, FileEntry, Layer, load_definition

ROOT = Path(__file__).resolve().parent.parent
FILES = ROOT / "engines" / "files" / "demo-model"


def model_files() -> list[FileEntry]:
    read = lambda name: (FILES / name).read_text()  # noqa: E731
    return [
        FileEntry(path="/bin", type="dir", mode=0o755),
        FileEntry(path="/bin/sh", type="symlink", target="bash"),
        FileEntry(path="/home", type="dir", mode=0o755),
        FileEntry(path="/home/mind", type="dir", mode=0o755),
        FileEntry(path="/home/mind/model", type="dir", mode=0o755),
        FileEntry(path="/home/mind/model/model.json", content=read("model.json"), mode=0o644),
        FileEntry(path="/home/mind/run.sh", content=read("run.sh"), mode=0o755),
        FileEntry(path="/home/mind/serve.py", content=read("serve.py"), mode=0o644),
    ]


def model_definition(alias: str = "test-model", *, user: str | None = None, env: dict | None = None,
                     cmd: list[str] | None = None, ports: list[str] | None = None) -> Definition:
    base = load_definition(ROOT / "build" / "demo-pytorch-x86_64.json")
    files = model_files()
    tag = hashlib.sha256("".join(f.path + (f.content or "") for f in files).encode()).hexdigest()[:8]
    layer = Layer(id=f"files/demo-model-{tag}", kind="files", files=files, comment="the demo model and its server")
    config = base.config.model_copy(update={
        "user": user or base.config.user, "env": {**base.config.env, **(env or {})},
        "cmd": cmd if cmd is not None else ["sh", "/home/mind/run.sh"],
        "exposed_ports": ports if ports is not None else ["8080/tcp"],
        "labels": {**base.config.labels, "io.enginefab.alias": alias}})
    image = base.image.model_copy(update={"alias": alias, "kind": "model"})
    return base.model_copy(update={"image": image, "config": config, "layers": [*base.layers, layer]})
