"""Rules over a CUDA stack: its driver, cuDNN and NCCL fit its toolkit and the engine's build
(NVIDIA's facts in engines/checks/compat.toml)."""

from __future__ import annotations

from packaging.specifiers import SpecifierSet

from enginefab.engines import compat as compat_mod
from enginefab.engines.image import Image
from enginefab.engines.rules.base import COMPAT, Context, major_minor, needs, rule, version_tuple


@rule("cuda-driver", "the CUDA stack declares at least NVIDIA's minimum driver for its toolkit, and says so in "
      "NVIDIA_REQUIRE_CUDA", "NVIDIA CUDA toolkit release notes (toolkit ↔ minimum driver table)")
def cuda_driver(img: Image, ctx: Context):
    s = img.stack
    if not s or s.kind != "cuda" or not ctx.compat.cuda:
        return
    facts = ctx.compat.cuda.get(major_minor(s.version))
    if facts is None:
        yield (f"field accelerator: no compatibility facts for CUDA {s.version} in {COMPAT}",
               f'add [cuda."{major_minor(s.version)}"] (min_driver, cudnn, nccl_min, source) to {COMPAT}')
        return
    if not s.min_driver:
        yield (f"field min_driver: stack {img.stack_id} does not declare its minimum driver "
               f"(CUDA {s.version} needs >= {facts.min_driver})", f'set min_driver = "{facts.min_driver}"')
    elif version_tuple(s.min_driver) < version_tuple(facts.min_driver):
        yield (f"field min_driver: stack {img.stack_id} declares driver >= {s.min_driver}, but CUDA {s.version} "
               f"needs driver >= {facts.min_driver} ({facts.source})", f'set min_driver = "{facts.min_driver}"')
    req = s.env.get("NVIDIA_REQUIRE_CUDA")
    if req is not None:
        said = next((t[len("cuda>="):] for t in req.split() if t.startswith("cuda>=")), None)
        if said is None or major_minor(said) != major_minor(s.version):
            yield (f"field env.NVIDIA_REQUIRE_CUDA: {req!r} does not say cuda>={major_minor(s.version)} for the CUDA "
                   f"{s.version} stack {img.stack_id} (the NVIDIA container runtime checks the host driver against it)",
                   f"write NVIDIA_REQUIRE_CUDA = \"cuda>={major_minor(s.version)} …\"")


def _cuda_facts(img: Image, ctx: Context, declared: str):
    """The image's CUDA stack and NVIDIA's facts for its version, when the stack declares `declared`."""
    s = img.stack
    if not s or s.kind != "cuda" or not getattr(s, declared):
        return None, None
    return s, ctx.compat.cuda.get(major_minor(s.version))


@rule("cudnn-for-cuda", "the stack's cuDNN release was built for its CUDA version", "NVIDIA cuDNN archive (builds per CUDA)")
def cudnn_for_cuda(img: Image, ctx: Context):
    s, facts = _cuda_facts(img, ctx, "cudnn")
    if s and facts and not s.bundled and major_minor(s.cudnn) not in facts.cudnn:
        yield (f"field cudnn: cuDNN {s.cudnn} has no build for CUDA {s.version} (cuDNN releases for CUDA "
               f"{major_minor(s.version)}: {', '.join(facts.cudnn)}; {facts.source})",
               f"use a cuDNN {' or '.join(facts.cudnn)} build for CUDA {major_minor(s.version)}")


@rule("nccl-for-cuda", "the stack's NCCL release has a build for its CUDA version", "NVIDIA NCCL downloads (+cudaX.Y builds)")
def nccl_for_cuda(img: Image, ctx: Context):
    s, facts = _cuda_facts(img, ctx, "nccl")
    if s and facts and version_tuple(s.nccl) < version_tuple(facts.nccl_min):
        yield (f"field nccl: NCCL {s.nccl} predates CUDA {s.version}: the first NCCL built for it is "
               f"{facts.nccl_min} ({facts.source})", f"use NCCL >= {facts.nccl_min}")


@rule("engine-cudnn", "the engine was built against the stack's cuDNN major version",
      "tensorflow.org tested build configurations; MindSpore installation guide")
def engine_cudnn(img: Image, ctx: Context):
    s = img.stack
    if not s or s.kind != "cuda" or s.bundled:
        return
    for eng, ver, need in needs(img, ctx):
        if need.cudnn:
            if not s.cudnn:
                yield (f"field cudnn: {eng} {ver} loads cuDNN {need.cudnn} but stack {img.stack_id} declares no cuDNN",
                       "declare the stack's cudnn version")
            elif not compat_mod.version_in(s.cudnn, need.cudnn):
                yield (f"field cudnn: {eng} {ver} for CUDA {s.version} was built against cuDNN {need.cudnn} "
                       f"(libcudnn.so.{_cudnn_major(need.cudnn)}); stack {img.stack_id} has cuDNN {s.cudnn} "
                       f"({need.source})", f"use a stack with cuDNN {need.cudnn}")


def _cudnn_major(spec: str) -> str:
    lows = [sp.version for sp in SpecifierSet(spec) if sp.operator in (">=", "==", "~=")]
    return lows[0].split(".")[0] if lows else "?"
