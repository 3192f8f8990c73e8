"""`enginefab plan` as text: one row per layer (a base image's blobs folded into its layer's row),
whole names when stdout is not a terminal; on a terminal, names cut to fit its width."""

from __future__ import annotations

from enginefab.assemble.planreport import human, per_layer


def _table(rows: list[tuple[str, ...]], width: int | None) -> list[str]:
    """Left-aligned columns two spaces apart; the first column is cut with … to fit `width`."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    if width is not None:
        rest = sum(widths[1:]) + 2 * (len(widths) - 1)
        widths[0] = max(12, min(widths[0], width - rest))
    out = []
    for r in rows:
        first = r[0] if len(r[0]) <= widths[0] else r[0][: widths[0] - 1] + "…"
        out.append("  ".join([first.ljust(widths[0])] + [c.ljust(w) for c, w in zip(r[1:], widths[1:])]).rstrip())
    return out


def lines(rep: dict, width: int | None) -> list[str]:
    layers = [("layer", "kind", "images", "size", "saves")]
    for row in per_layer(rep["layers"]):
        size = human(row["size"]) + ("" if row["size_source"] in ("built", "pinned") else f" ({row['size_source']})")
        blobs = f" ({row['blobs']} blobs)" if row.get("blobs", 1) > 1 else ""
        layers.append((row["id"] + blobs, row["kind"], str(len(row["images"])), size,
                       human(row["saves"]) if row["saves"] else ""))
    images = [("image", "layers", "size")]
    for img in rep["images"]:
        images.append((img["alias"], f"{img['layers']}" + (" (over budget)" if img["over_budget"] else ""),
                       human(img["size"]) + (f" + {img['unknown_layers']} unknown" if img["unknown_layers"] else "")))
    return _table(layers, width) + [""] + _table(images, width)
