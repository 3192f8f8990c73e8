"""Release notes in Markdown, rendered from the release document (`summary.document`): per image
its digest, size, tags, the pins changed since the previous release and its check results by
level; then the multi-arch indexes. No timings, no transfer counts: the same release gives the
same notes byte for byte.
"""

from __future__ import annotations

from enginefab.check.report import LEVELS


def human_size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _code(s: str) -> str:
    """Text shown as code: no Markdown or HTML in a check's detail is interpreted."""
    return "`" + _cell(s).replace("`", "'") + "`"


def level_summary(lv: dict | None) -> str:
    if lv is None:
        return "not run"
    parts = [f"{lv['pass']} passed"] + [f"{lv[k]} {w}" for k, w in (("fail", "failed"), ("error", "errors"),
                                                                        ("skip", "skipped")) if lv[k]]
    return ", ".join(parts)


def change_summary(ch: dict | None) -> str:
    if ch is None:
        return "first release"
    if ch["status"] == "added":
        return "new image"
    if not ch["pins"] and not ch["settings"]:
        return "no pin changed"
    return ", ".join(ch["pins"] + [f"definition: {s}" for s in ch["settings"]])


def _image_section(img: dict) -> list[str]:
    out = [f"## {img['alias']}", "", f"`{img['name']}` ({img['platform']})", "",
           f"- digest: `{img['digest']}`", f"- size: {human_size(img['size'])} in {len(img['layers'])} layers"]
    if img["tags"]:
        out.append("- tags: " + ", ".join(f"`{t}`" for t in img["tags"]))
    if img["reference"]:
        out.append(f"- pull: `{img['reference']}`")
    ch = img["changes"]
    if ch is None:
        out.append("- pins changed: none known (no previous release)")
    elif ch["status"] == "added":
        out.append("- pins changed: new image (not in the previous release)")
    elif ch["pins"] or ch["settings"]:
        out.append("- pins changed:")
        out += [f"  - {_code(p)}" for p in ch["pins"]] + [f"  - definition: {s}" for s in ch["settings"]]
    else:
        out.append("- pins changed: none" + ("" if not ch["digest_changes"] else f" ({ch['why']})"))
    out.append("- checks:")
    for level in LEVELS:
        lv = img["checks"].get(level)
        out.append(f"  - {level}: {level_summary(lv)}")
        out += [f"    - ✗ {_code(f)}" for f in (lv or {}).get("failed", [])]
    for r in img["referrers"]:
        out.append(f"- {r['kind']}: `{r['digest']}`")
    return out + [""]


def markdown(doc: dict) -> str:
    t = doc["totals"]
    since = f"changes since the previous release (lock `{doc['since']}`)" if doc["since"] else \
        "first release (no previous lock to compare with)"
    lines = [f"# {doc['title']}", "",
             f"Lock `{doc['lock']}`; {since}." + (f" Registry `{doc['registry']}`." if doc["registry"] else ""), "",
             f"{t['images']} images, {t['layers']} layers ({t['unique_layers']} distinct): "
             f"{human_size(t['sum_of_images'])} as separate images, {human_size(t['unique_bytes'])} stored.", "",
             "| image | digest | size | pins changed | " + " | ".join(LEVELS) + " |",
             "|---|---|---|---|" + "---|" * len(LEVELS)]
    for img in doc["images"]:
        cells = [f"`{img['alias']}`", f"`{img['digest'][:19]}`", human_size(img["size"]),
                 _cell(change_summary(img["changes"]))]
        cells += [level_summary(img["checks"].get(lv)) for lv in LEVELS]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for img in doc["images"]:
        lines += _image_section(img)
    if doc["indexes"]:
        lines += ["## Multi-arch indexes", ""]
        for x in doc["indexes"]:
            members = ", ".join(f"{m['platform'].get('architecture', '?')}: `{m['alias']}`" for m in x["members"])
            more = "".join(f", also `{t}`" for t in x.get("tags", [])[1:])
            lines.append(f"- `{x['reference']}` `{x['digest']}` ({members}){more}")
        lines.append("")
    return "\n".join(lines)
