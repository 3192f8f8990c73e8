"""ModelArts conventions: the ma-user account, its group, home and workdir, PYTHONUNBUFFERED, no
root-owned setuid/setgid files, the size limit of the image's kind, a model image's command, port
and model directory, and the accelerator's variables. Pure functions of an Inventory; every
failure cites its rule and the rule's page (`enginefab.check.modelarts`)."""

from __future__ import annotations

from enginefab.check import modelarts as ma
from enginefab.check.facts import Facts
from enginefab.check.inventory import Inventory
from enginefab.check.report import Result

NVIDIA_VARS = ("NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "NVIDIA_REQUIRE_CUDA")
CANN_VARS = ("ASCEND_OPP_PATH", "ASCEND_AICPU_PATH", "TBE_IMPL_PATH")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SHELLS = ("sh", "bash", "dash", "/bin/sh", "/bin/bash", "/usr/bin/sh", "/usr/bin/bash", "/bin/dash", "/usr/bin/dash")


def cited(problems: list[tuple[str, ma.Rule]]) -> str:
    """Problems grouped by the rule they break, each group followed by the rule and its page."""
    rules: dict[ma.Rule, list[str]] = {}
    for text, rule in problems:
        rules.setdefault(rule, []).append(text)
    return "; ".join(f"{', '.join(texts)} [{rule.cite()}]" for rule, texts in rules.items())


def _account(inv: Inventory, facts: Facts) -> list[tuple[str, ma.Rule]]:
    user, uid, gid, home = facts.home_user
    problems = []
    if facts.user != f"{uid}:{gid}":
        problems.append((f"config User is {facts.user!r}, not {uid}:{gid}", ma.USER))
    entry = None
    for f in inv.passwd:
        if len(f) >= 7 and f[2] == str(uid):
            entry = f
    if entry is None:
        problems.append((f"/etc/passwd has no user with uid {uid}", ma.USER))
    elif entry[0] != user or entry[3] != str(gid) or entry[5] != home:
        clash = (f" (Ascend bases create {entry[0]} with uid {uid}: rename it to {user} or move it to another uid in "
                 "a layer of the image)") if entry[0] == "HwHiAiUser" else ""
        problems.append((f"uid {uid} is {entry[0]} (gid {entry[3]}, home {entry[5]}), not {user} gid {gid} home "
                         f"{home}{clash}", ma.USER))
    if inv.group and not any(len(g) >= 3 and g[2] == str(gid) for g in inv.group):
        problems.append((f"/etc/group has no group with gid {gid}", ma.USER))
    return problems


def modelarts(inv: Inventory, facts: Facts) -> Result:
    """The rules every custom image follows, training or model."""
    user, uid, gid, home = facts.home_user
    problems = _account(inv, facts)
    if facts.workdir != home:
        problems.append((f"WorkingDir is {facts.workdir!r}, not {home}", ma.HOME))
    if inv.home is None or not inv.home.is_dir:
        problems.append((f"{home} does not exist", ma.HOME))
    elif inv.home.owner is not None and inv.home.owner != (uid, gid):
        problems.append((f"{home} is owned by {inv.home.owner[0]}:{inv.home.owner[1]}, not {uid}:{gid}", ma.HOME))
    if facts.env.get("PYTHONUNBUFFERED") != "1":
        problems.append(("PYTHONUNBUFFERED=1 is not set", ma.LOGS))
    if inv.setuid:
        problems.append((f"{len(inv.setuid)} root-owned setuid/setgid files: {', '.join(inv.setuid[:5])}", ma.SETUID))
    return Result("static", "modelarts-conventions", "fail" if problems else "pass",
                  cited(problems) if problems else f"{user} {uid}:{gid}, home and workdir {home}, "
                  "PYTHONUNBUFFERED=1, no root setuid/setgid files")


def size(inv: Inventory, facts: Facts) -> Result:
    """The unpacked size (what a node's disk holds; the compressed upload is smaller) against the
    limit of the image's kind."""
    limit, rule = ma.SIZE_LIMIT[facts.kind]
    gb = f"{inv.size / ma.GB:.2f} GB"
    data = {"bytes": inv.size, "limit": limit, "kind": facts.kind}
    if inv.size > limit:
        return Result("static", "modelarts-size", "fail", f"{gb} unpacked, over {limit / ma.GB:g} GB [{rule.cite()}]",
                      data=data)
    return Result("static", "modelarts-size", "pass", f"{gb} unpacked, within the {facts.kind} limit of "
                  f"{limit / ma.GB:g} GB", data=data)


def command(facts: Facts) -> list[str]:
    """What the runtime starts: the config's Entrypoint, then its Cmd."""
    return [*facts.entrypoint, *facts.cmd]


def command_paths(facts: Facts) -> tuple[list[str], str | None]:
    """The container paths a model image's command may name: where its program may be (looked up
    on PATH when it has no slash), and the script a shell is asked to run (or None)."""
    argv = command(facts)
    if not argv:
        return [], None
    prog = argv[0]
    progs = [prog] if "/" in prog else [f"{d.rstrip('/')}/{prog}" for d in
                                        facts.env.get("PATH", DEFAULT_PATH).split(":") if d.startswith("/")]
    script = argv[1] if prog in SHELLS and len(argv) > 1 and argv[1].startswith("/") else None
    return progs, script


def model(inv: Inventory, facts: Facts) -> list[Result]:
    """A model image's boot command, port and model directory; nothing for a training image."""
    if facts.kind != "model":
        return []
    return [_model_command(inv, facts), _model_port(facts), _model_dir(inv, facts)]


def _model_command(inv: Inventory, facts: Facts) -> Result:
    argv = command(facts)
    name = "modelarts-model-command"
    if not argv:
        return Result("static", name, "fail", f"the image has no Entrypoint or Cmd [{ma.COMMAND.cite()}]")
    progs, script = command_paths(facts)
    found = [p for p in progs if p in inv.exists]
    problems = []
    if not found:
        problems.append(f"{argv[0]} is not in the image" + ("" if "/" in argv[0] else " (looked up on PATH)"))
    if script is not None and script not in inv.exists:
        problems.append(f"{script} is not in the image")
    shown = " ".join(argv)
    if problems:
        return Result("static", name, "fail", f"{shown}: {'; '.join(problems)} [{ma.COMMAND.cite()}]")
    return Result("static", name, "pass", f"{shown}: {', '.join(found[:1] + ([script] if script else []))} "
                  "in the image")


def _model_port(facts: Facts) -> Result:
    want = f"{ma.MODEL_PORT}/tcp"
    if want in facts.exposed_ports:
        return Result("static", "modelarts-model-port", "pass", f"ExposedPorts has {want}")
    have = ", ".join(facts.exposed_ports) or "none"
    return Result("static", "modelarts-model-port", "fail", f"ExposedPorts is {have}, not {want} [{ma.PORT.cite()}]")


def _model_dir(inv: Inventory, facts: Facts) -> Result:
    user, uid, gid, _home = facts.home_user
    d = inv.dirs.get(ma.MODEL_DIR_PATH)
    name = "modelarts-model-dir"
    if d is None or not d.is_dir:
        return Result("static", name, "fail", f"{ma.MODEL_DIR_PATH} does not exist [{ma.MODEL_DIR.cite()}]")
    mode = d.mode or 0
    readable = (mode & 0o005 == 0o005 or (d.owner is not None and d.owner[0] == uid and mode & 0o500 == 0o500)
                or (d.owner is not None and d.owner[1] == gid and mode & 0o050 == 0o050))
    if not readable:
        owner = f"{d.owner[0]}:{d.owner[1]}" if d.owner else "its owner"
        return Result("static", name, "fail", f"{ma.MODEL_DIR_PATH} (mode {mode:o}, {owner}) cannot be listed by "
                      f"{user} {uid}:{gid} [{ma.MODEL_DIR.cite()}]")
    return Result("static", name, "pass", f"{ma.MODEL_DIR_PATH} exists, readable by {user}")


def accelerator_env(facts: Facts) -> list[Result]:
    """NVIDIA variables on CUDA images, CANN variables on Ascend images; nothing on CPU images."""
    if facts.accelerator not in ("cuda", "cann"):
        return []
    need = NVIDIA_VARS if facts.accelerator == "cuda" else CANN_VARS
    missing = [v for v in need if not facts.env.get(v)]
    return [Result("static", f"{facts.accelerator}-env", "fail" if missing else "pass",
                   f"missing {', '.join(missing)}" if missing else f"{', '.join(need)} set")]
