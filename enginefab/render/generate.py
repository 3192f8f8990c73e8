"""Generators: a Dockerfile per image (for teams that build with BuildKit) and CI files (GitHub
Actions, GitLab CI) with one job per image on a runner of its arch. Templates live in
render/templates; inputs are the matrix and the pinned definitions. A generated CI file names the
path it was written to, so that its own lock-check job can tell when it is stale (`--check`)."""

from __future__ import annotations

import json
import shlex
from functools import lru_cache

import jinja2

from enginefab.core.definition import Definition, Input, Layer
from enginefab.core.errors import EnginefabError
from enginefab.engines.matrix import Matrix
from enginefab.render.context import ContextFile

RUNNERS = {"x86_64": "ubuntu-latest", "aarch64": "ubuntu-24.04-arm"}
#: GitLab picks runners by tag: the hosted Linux runners of each arch
GITLAB_TAGS = {"x86_64": "saas-linux-medium-amd64", "aarch64": "saas-linux-medium-arm64"}
#: where each CI system reads its file (the default of `render ci --out`)
CI_PATHS = {"github": ".github/workflows/engine-images.yml", "gitlab": ".gitlab-ci.yml"}


def _dq(v: object) -> str:
    """A JSON string or array as Dockerfile ENV/LABEL/CMD read it (no HTML escaping)."""
    return json.dumps(v, ensure_ascii=False)


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("enginefab.render", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["dq"] = _dq
    env.filters["shquote"] = shlex.quote
    return env


def step_file(i: Input) -> str:
    """A run step's script as a file of the build context (named by step and content)."""
    return f"{i.name}-{(i.sha256 or '')[:12]}.sh"


def dockerfile(d: Definition, parent: str | None = None) -> dict[str, ContextFile]:
    """The build context: {"Dockerfile": …, "steps/<name>.sh": …, "files/<n>/…": …}. A derived
    image starts FROM its parent by digest: a registry parent at its reference, a matrix parent
    at `parent` (the repository it was pushed to, e.g. 127.0.0.1:5000/enginefab/pytorch)."""
    base = _from(d, parent)
    layers = [layer for layer in d.layers if layer.kind != "base"]
    unpinned = [i for layer in layers for i in layer.inputs if i.kind == "deb" and not i.url]
    if unpinned:
        raise EnginefabError(
            f"{len(unpinned)} packages are not pinned yet ({unpinned[0].name} {unpinned[0].version}, …): a Dockerfile "
            "needs each .deb's URL and sha256",
            image=d.image.alias, input=unpinned[0].ref,
            fix=f"run `enginefab lock {d.image.alias}` on a machine that reaches their repositories (`enginefab show "
            f"{d.image.alias}` lists them) and commit build/{d.image.alias}.json",
        )
    trees = {layer.id: files_dir(n) for n, layer in enumerate(layers) if layer.kind == "files"}
    text = _env().get_template("Dockerfile.j2").render(d=d, base=base, layers=layers, step_file=step_file, trees=trees)
    files = {"Dockerfile": ContextFile(text)}
    for layer in layers:
        for i in layer.inputs:
            if i.kind == "run":
                files[f"steps/{step_file(i)}"] = ContextFile(i.script or "")
        if layer.kind == "files":
            files.update(layer_tree(layer, trees[layer.id]))
    return files


def _from(d: Definition, parent: str | None) -> str:
    """What the Dockerfile starts FROM: the base image, or the parent, by digest."""
    if d.parent is not None:
        ref = parent or d.parent.reference
        if not ref:
            raise EnginefabError(
                f"{d.image.alias} is derived from the matrix image {d.parent.alias}: the Dockerfile starts FROM it in "
                "a registry, and which one is not in the lock", image=d.image.alias,
                fix=f"pass --parent REGISTRY/REPOSITORY where {d.parent.alias} was pushed (`enginefab push "
                f"{d.parent.alias} --to …` prints it), e.g. --parent 127.0.0.1:5000/enginefab/pytorch")
        return f"{ref.rpartition('@')[0] or ref}@{d.parent.manifest}"
    if d.base is None:
        raise EnginefabError(
            "this image's root is made of Debian packages, not a base image: Docker cannot build it without one",
            image=d.image.alias,
            fix="build it with `enginefab build` (or `nix build`); Dockerfiles are rendered for images with a base "
            "and for images derived from one (`from`)",
        )
    return f"{d.base.reference}@{d.base.digest}"


def files_dir(n: int) -> str:
    return f"files/{n}"


def layer_tree(layer: Layer, where: str) -> dict[str, ContextFile]:
    """A `files` layer's entries as a tree under `where` in the context (COPY takes it as it is)."""
    out: dict[str, ContextFile] = {}
    for f in layer.files:
        if (f.uid, f.gid) != (0, 0):
            raise EnginefabError(f"layer {layer.id}: {f.path} is owned by {f.uid}:{f.gid}; a rendered Dockerfile copies "
                                 "a files layer as root's", fix="build this image with `enginefab build`")
        rel = f"{where}/{f.path.strip('/')}"
        if f.type == "symlink":
            out[rel] = ContextFile(link=f.target or "")
        elif f.type == "dir":
            out[rel] = ContextFile(mode=f.mode, directory=True)
        else:
            out[rel] = ContextFile(f.content or "", f.mode)
    return out


def runner_flags(runners: dict[str, str], defaults: dict[str, str]) -> str:
    """The `--runner` options that reproduce `runners` (for the file's own `--check` command)."""
    return "".join(f" --runner {shlex.quote(f'{a}={r}')}" for a, r in sorted(runners.items()) if defaults.get(a) != r)


def ci_workflow(m: Matrix, runners: dict[str, str] | None = None, path: str = CI_PATHS["github"]) -> str:
    """A GitHub Actions workflow: lock check once, then one job per image (a matrix entry)."""
    r = {**RUNNERS, **(runners or {})}
    return _env().get_template("github-matrix.yml.j2").render(images=m.images, runners=r, path=path,
                                                               flags=runner_flags(r, RUNNERS))


def gitlab_ci(m: Matrix, tags: dict[str, str] | None = None, path: str = CI_PATHS["gitlab"]) -> str:
    """A GitLab CI file: a lock stage, then one job per image named by its alias."""
    t = {**GITLAB_TAGS, **(tags or {})}
    return _env().get_template("gitlab-ci.yml.j2").render(images=m.images, tags=t, path=path,
                                                           flags=runner_flags(t, GITLAB_TAGS))


def parse_runners(specs: list[str]) -> dict[str, str]:
    """`ARCH=LABEL` options (a GitHub `runs-on` label, a GitLab runner tag) → {arch: label}."""
    out: dict[str, str] = {}
    for spec in specs:
        arch, _, label = spec.partition("=")
        if arch not in RUNNERS or not label or any(c in label for c in "\n\r\"'$`"):
            raise EnginefabError(f"--runner {spec!r}: expected ARCH=LABEL with ARCH one of {', '.join(sorted(RUNNERS))}",
                                 fix="e.g. --runner aarch64=self-hosted-arm64")
        out[arch] = label
    return out


def render_ci(m: Matrix, system: str, path: str, runners: dict[str, str] | None = None) -> str:
    if system == "gitlab":
        return gitlab_ci(m, tags=runners, path=path)
    return ci_workflow(m, runners=runners, path=path)
