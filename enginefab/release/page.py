"""The release page: one self-contained HTML file (inline CSS, no script, no external asset, no
server) rendered from the release document (`summary.document`).

- a summary table: per image its platform, digest, size and check status per level;
- images × layers: every distinct layer once, the images that hold it, its size, and how many
  images share it (shared layers are stored and pulled once);
- per image: tags, pull reference, pins changed, failed checks, links to its referrers (SBOM,
  provenance, check report) in the registry.

Every value is escaped (names and check details come from files anyone can edit). Status cells
carry `data-image` and `data-status` so that a test, or a script, can read the page's DOM.
"""

from __future__ import annotations

from html import escape

from enginefab.check.report import LEVELS
from enginefab.release.notes import change_summary, human_size, level_summary

PASS, FAIL, NONE = "#1f883d", "#cf222e", "#8c959f"

CSS = f"""
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1f2328; background: #fff; }}
h1 {{ font-size: 22px; margin: 0 0 4px; }} h2 {{ font-size: 17px; margin: 28px 0 8px; }}
p.meta, code {{ font-family: ui-monospace, monospace; font-size: 12px; }} p.meta {{ color: #59636e; }}
table {{ border-collapse: collapse; margin: 8px 0; }}
th, td {{ border: 1px solid #d1d9e0; padding: 4px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f6f8fa; }} td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.badge {{ display: inline-block; min-width: 64px; padding: 2px 8px; border-radius: 4px; color: #fff;
          font-weight: 600; text-align: center; }}
.pass {{ background: {PASS}; }} .fail {{ background: {FAIL}; }} .none, .unchecked {{ background: {NONE}; }}
td.has {{ background: #ddf4ff; }} td.shared {{ background: #b6e3ff; }}
section.image {{ border-top: 1px solid #d1d9e0; }}
"""


def _badge(status: str, text: str, image: str, level: str) -> str:
    return (f'<span class="badge {escape(status)}" data-image="{escape(image)}" data-level="{escape(level)}" '
            f'data-status="{escape(status)}">{escape(text)}</span>')


def _level_status(lv: dict | None) -> str:
    if lv is None:
        return "none"
    return "fail" if lv["fail"] or lv["error"] else "pass"


def _summary(doc: dict) -> list[str]:
    out = ['<table id="images"><tr><th>image</th><th>platform</th><th>digest</th><th>size</th><th>status</th>'
           + "".join(f"<th>{lv}</th>" for lv in LEVELS) + "<th>pins changed</th></tr>"]
    for img in doc["images"]:
        a = img["alias"]
        cells = [f'<td><a href="#{escape(a)}">{escape(a)}</a></td>', f"<td>{escape(img['platform'])}</td>",
                 f"<td><code>{escape(img['digest'][:19])}</code></td>",
                 f'<td class="num">{human_size(img["size"])}</td>',
                 f"<td>{_badge(img['status'], img['status'].upper(), a, 'all')}</td>"]
        for lv in LEVELS:
            c = img["checks"].get(lv)
            cells.append(f"<td>{_badge(_level_status(c), level_summary(c), a, lv)}</td>")
        cells.append(f"<td>{escape(change_summary(img['changes']))}</td>")
        out.append(f'<tr class="image" data-image="{escape(a)}">' + "".join(cells) + "</tr>")
    return out + ["</table>"]


def _layers(doc: dict) -> list[str]:
    images = [img["alias"] for img in doc["images"]]
    rows: dict[str, dict] = {}
    for img in doc["images"]:
        for la in img["layers"]:
            rows.setdefault(la["digest"], {**la, "in": set()})["in"].add(img["alias"])
    out = ['<table id="layers"><tr><th>layer</th><th>digest</th><th>size</th><th>images</th>'
           + "".join(f"<th>{escape(a)}</th>" for a in images) + "</tr>"]
    for digest, la in rows.items():
        n = len(la["in"])
        cells = "".join((f'<td class="{"shared" if n > 1 else "has"}">●</td>' if a in la["in"] else "<td></td>")
                        for a in images)
        out.append(f'<tr data-digest="{escape(digest)}"><td>{escape(la["id"])}</td>'
                   f"<td><code>{escape(digest[:19])}</code></td><td class=\"num\">{human_size(la['size'])}</td>"
                   f'<td class="num">{n}</td>{cells}</tr>')
    return out + ["</table>"]


def _image(img: dict) -> list[str]:
    a = escape(img["alias"])
    out = [f'<section class="image" id="{a}"><h2>{a} {_badge(img["status"], img["status"].upper(), img["alias"], "all")}</h2>',
           f"<p><code>{escape(img['name'])}</code> · {escape(img['platform'])} · {human_size(img['size'])}<br>",
           f"digest <code>{escape(img['digest'])}</code>"]
    if img["reference"]:
        out.append(f"<br>pull <code>{escape(img['reference'])}</code>")
    if img["tags"]:
        out.append("<br>tags " + ", ".join(f"<code>{escape(t)}</code>" for t in img["tags"]))
    out.append(f"<br>pins changed: {escape(change_summary(img['changes']))}</p>")
    failed = [f"{lv}: {f}" for lv, c in img["checks"].items() for f in c["failed"]]
    if failed:
        out.append("<ul class=\"failed\">" + "".join(f"<li>✗ {escape(f)}</li>" for f in failed) + "</ul>")
    if img["referrers"]:
        out.append("<ul class=\"referrers\">" + "".join(
            f'<li>{escape(r["kind"])}: ' + (f'<a href="{escape(r["url"])}"><code>{escape(r["digest"])}</code></a>'
                                            if r["url"] else f"<code>{escape(r['digest'])}</code>") + "</li>"
            for r in img["referrers"]) + "</ul>")
    return out + ["</section>"]


def html(doc: dict) -> str:
    t = doc["totals"]
    meta = f"lock {doc['lock']}" + (f" · since {doc['since']}" if doc["since"] else "") + \
        (f" · registry {doc['registry']}" if doc["registry"] else "")
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{escape(doc['title'])}</title><style>{CSS}</style></head><body>",
             f"<h1>{escape(doc['title'])}</h1>", f'<p class="meta">{escape(meta)}</p>',
             f"<p>{t['images']} images, {t['layers']} layers ({t['unique_layers']} distinct): "
             f"{human_size(t['sum_of_images'])} as separate images, {human_size(t['unique_bytes'])} stored once.</p>",
             *_summary(doc), "<h2>Layers</h2>", *_layers(doc)]
    if doc["indexes"]:
        parts += ["<h2>Multi-arch indexes</h2><ul>"] + [
            f"<li><code>{escape(x['reference'])}</code> <code>{escape(x['digest'][:19])}</code>"
            + "".join(f" <code>{escape(t)}</code>" for t in x.get("tags", [])[1:]) + ": "
            + ", ".join(escape(m["alias"]) for m in x["members"]) + "</li>" for x in doc["indexes"]] + ["</ul>"]
    for img in doc["images"]:
        parts += _image(img)
    return "\n".join(parts + ["</body></html>", ""])
