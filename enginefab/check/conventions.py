"""ModelArts conventions: the ma-user account, its home and workdir, PYTHONUNBUFFERED, no
root-owned setuid/setgid files, and the accelerator's variables. Pure functions of an Inventory."""

from __future__ import annotations

from enginefab.check.facts import Facts
from enginefab.check.inventory import Inventory
from enginefab.check.report import Result

NVIDIA_VARS = ("NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "NVIDIA_REQUIRE_CUDA")
CANN_VARS = ("ASCEND_OPP_PATH", "ASCEND_AICPU_PATH", "TBE_IMPL_PATH")


def modelarts(inv: Inventory, facts: Facts) -> Result:
    user, uid, gid, home = facts.home_user
    problems = []
    if facts.user != f"{uid}:{gid}":
        problems.append(f"config User is {facts.user!r}, not {uid}:{gid}")
    if facts.workdir != home:
        problems.append(f"WorkingDir is {facts.workdir!r}, not {home}")
    if facts.env.get("PYTHONUNBUFFERED") != "1":
        problems.append("PYTHONUNBUFFERED=1 is not set")
    entry = None
    for f in inv.passwd:
        if len(f) >= 7 and f[2] == str(uid):
            entry = f
    if entry is None:
        problems.append(f"/etc/passwd has no user with uid {uid}")
    elif entry[0] != user or entry[3] != str(gid) or entry[5] != home:
        problems.append(f"uid {uid} is {entry[0]} (gid {entry[3]}, home {entry[5]}), not {user} gid {gid} home {home}")
    if inv.home is None or not inv.home.is_dir:
        problems.append(f"{home} does not exist")
    elif inv.home.owner is not None and inv.home.owner != (uid, gid):
        problems.append(f"{home} is owned by {inv.home.owner[0]}:{inv.home.owner[1]}, not {uid}:{gid}")
    if inv.setuid:
        problems.append(f"{len(inv.setuid)} root-owned setuid/setgid files: {', '.join(inv.setuid[:5])}")
    return Result("static", "modelarts-conventions", "fail" if problems else "pass",
                  "; ".join(problems) if problems else f"{user} {uid}:{gid}, home and workdir {home}, "
                  "PYTHONUNBUFFERED=1, no root setuid/setgid files")


def accelerator_env(facts: Facts) -> list[Result]:
    """NVIDIA variables on CUDA images, CANN variables on Ascend images; nothing on CPU images."""
    if facts.accelerator not in ("cuda", "cann"):
        return []
    need = NVIDIA_VARS if facts.accelerator == "cuda" else CANN_VARS
    missing = [v for v in need if not facts.env.get(v)]
    return [Result("static", f"{facts.accelerator}-env", "fail" if missing else "pass",
                   f"missing {', '.join(missing)}" if missing else f"{', '.join(need)} set")]
