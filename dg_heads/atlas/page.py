"""The atlas as files a person reads: one self-contained HTML page, PNG heatmaps, CSV and JSON.

The page needs no network when viewed: its heatmaps are inline SVG (axes, a colour scale, the
value of every cell on hover), its table sorts with a few lines of inline JavaScript. The PNGs
are drawn with Pillow (no plotting dependency) and go to TensorBoard's image tab too.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dg_heads.run_files import write_atomic

_RAMP = [(68, 1, 84), (59, 82, 140), (33, 145, 140), (94, 201, 98), (253, 231, 37)]  # viridis-like, dark -> yellow
_DIVERGING = [(33, 102, 172), (247, 247, 247), (178, 24, 43)]  # blue (negative) - white - red (positive)
_MISSING = (215, 215, 215)


def _finite(matrix) -> list[float]:
    return [v for row in matrix for v in row if v is not None and math.isfinite(v)]


def scale_of(matrix, diverging: bool) -> tuple[float, float]:
    values = _finite(matrix) or [0.0]
    if diverging:
        bound = max(abs(min(values)), abs(max(values))) or 1.0
        return -bound, bound
    low, high = min(values), max(values)
    return (low, high) if high > low else (low, low + 1e-12)


def colour(value, low: float, high: float, diverging: bool) -> tuple[int, int, int]:
    if value is None or not math.isfinite(value):
        return _MISSING
    ramp = _DIVERGING if diverging else _RAMP
    t = min(1.0, max(0.0, (value - low) / (high - low))) * (len(ramp) - 1)
    i = min(int(t), len(ramp) - 2)
    f = t - i
    return tuple(int(round(a + (b - a) * f)) for a, b in zip(ramp[i], ramp[i + 1]))


def fmt(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def svg_heatmap(matrix, title: str, caption: str, diverging: bool = False, cell: int = 22) -> str:
    """An inline SVG: blocks down, heads across, a colour scale with its range, hover values."""
    blocks, num_heads = len(matrix), len(matrix[0])
    left, top, bar = 46, 34, 14
    text_width = max(len(title) * 7.5, len(caption) * 5.6)  # rough widths of the 13 px title and 10 px caption
    width, height = int(max(left + num_heads * cell + 70, left + text_width + 8)), top + blocks * cell + 40
    low, high = scale_of(matrix, diverging)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="heatmap" '
             f'role="img" aria-label="{html.escape(title)}">',
             f'<text x="{left}" y="14" font-size="13" font-weight="bold">{html.escape(title)}</text>']
    for b, row in enumerate(matrix):
        for h, value in enumerate(row):
            r, g, bl = colour(value, low, high, diverging)
            parts.append(f'<rect x="{left + h * cell}" y="{top + b * cell}" width="{cell}" height="{cell}" '
                         f'fill="rgb({r},{g},{bl})"><title>block {b}, head {h}: {fmt(value)}</title></rect>')
    for b in range(blocks):
        parts.append(f'<text x="{left - 4}" y="{top + b * cell + cell * 0.7}" font-size="10" '
                     f'text-anchor="end">{b}</text>')
    for h in range(num_heads):
        parts.append(f'<text x="{left + h * cell + cell / 2}" y="{top - 4}" font-size="10" '
                     f'text-anchor="middle">{h}</text>')
    parts.append(f'<text x="{left + num_heads * cell / 2}" y="{top + blocks * cell + 16}" font-size="11" '
                 f'text-anchor="middle">head</text>')
    parts.append(f'<text x="12" y="{top + blocks * cell / 2}" font-size="11" text-anchor="middle" '
                 f'transform="rotate(-90 12 {top + blocks * cell / 2})">block</text>')
    x0, steps = left + num_heads * cell + 12, 24
    span = blocks * cell
    for i in range(steps):  # the colour scale, high at the top
        value = high - (high - low) * (i + 0.5) / steps
        r, g, bl = colour(value, low, high, diverging)
        parts.append(f'<rect x="{x0}" y="{top + span * i / steps:.2f}" width="{bar}" '
                     f'height="{span / steps + 0.5:.2f}" fill="rgb({r},{g},{bl})"/>')
    parts.append(f'<text x="{x0 + bar + 3}" y="{top + 9}" font-size="10">{fmt(high)}</text>')
    parts.append(f'<text x="{x0 + bar + 3}" y="{top + span}" font-size="10">{fmt(low)}</text>')
    parts.append(f'<text x="{left}" y="{height - 6}" font-size="10" fill="#555">{html.escape(caption)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def png_heatmap(matrix, title: str, caption: str, diverging: bool = False, cell: int = 24) -> Image.Image:
    """The same heatmap as a PIL image (for the PNG files and TensorBoard)."""
    blocks, num_heads = len(matrix), len(matrix[0])
    font, small = _font(13), _font(10)
    left, top, bar = 46, 40, 14
    grid_w, grid_h = num_heads * cell, blocks * cell
    width = max(left + grid_w + 90, 24 + _length(font, title), 24 + _length(small, caption))
    height = top + grid_h + 44
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    low, high = scale_of(matrix, diverging)
    draw.text((left, 6), title, fill="black", font=font)
    for b, row in enumerate(matrix):
        for h, value in enumerate(row):
            x, y = left + h * cell, top + b * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour(value, low, high, diverging))
    for b in range(blocks):
        _text(draw, (left - 6, top + b * cell + cell / 2), str(b), "black", small, "rm")
    for h in range(num_heads):
        _text(draw, (left + h * cell + cell / 2, top - 4), str(h), "black", small, "ms")
    _text(draw, (left + grid_w / 2, top + grid_h + 14), "head", "black", small, "ms")
    _text(draw, (4, top + grid_h / 2), "block", "black", small, "lm")
    x0 = left + grid_w + 12
    for i in range(grid_h):
        value = high - (high - low) * (i + 0.5) / grid_h
        draw.line([x0, top + i, x0 + bar, top + i], fill=colour(value, low, high, diverging))
    _text(draw, (x0 + bar + 4, top), fmt(high), "black", small, "lt")
    _text(draw, (x0 + bar + 4, top + grid_h), fmt(low), "black", small, "lb")
    _text(draw, (left, height - 8), caption, "#555555", small, "ls")
    return image


def _font(size: int):
    """Pillow's own font at `size` (Pillow >= 10.1), or its fixed bitmap font before that."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def _length(font, text: str) -> int:
    try:
        return int(font.getlength(text))
    except AttributeError:
        return 6 * len(text)


def _text(draw, xy, text: str, fill: str, font, anchor: str) -> None:
    """Text placed by its anchor; a bitmap font (Pillow < 10.1) takes none: placed at its corner."""
    try:
        draw.text(xy, text, fill=fill, font=font, anchor=anchor)
    except ValueError:
        draw.text(xy, text, fill=fill, font=font)


def chw(image: Image.Image) -> np.ndarray:
    """[3, H, W] uint8: what TensorBoard's `add_image` takes."""
    return np.asarray(image).transpose(2, 0, 1).copy()


_SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function (th, column) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var ascending = th.dataset.order !== 'asc';
    th.closest('tr').querySelectorAll('th').forEach(function (o) { delete o.dataset.order; });
    th.dataset.order = ascending ? 'asc' : 'desc';
    function key(row) {
      var text = row.cells[column].dataset.value || row.cells[column].textContent;
      var number = parseFloat(text);
      return isNaN(number) ? text : number;
    }
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (typeof x !== typeof y) { return typeof x === 'number' ? -1 : 1; }
      return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
.maps { display: flex; flex-wrap: wrap; gap: 1.2em; }
figure { margin: 0; } figcaption { font-size: 12px; color: #444; max-width: 380px; }
table.sortable { border-collapse: collapse; font-size: 12px; }
table.sortable th { cursor: pointer; background: #eee; position: sticky; top: 0; }
table.sortable th, table.sortable td { border: 1px solid #ccc; padding: 2px 6px; }
td.words { max-width: 520px; }
.note { color: #555; font-size: 13px; }
"""


def table_rows(atlas: dict) -> tuple[list[str], list[list]]:
    """The per-head table: header and one row per (block, head)."""
    blocks, num_heads = atlas["grid"]
    columns = list(atlas["measures"]) + list(atlas["views"])
    compare = atlas.get("compare")
    differences = list(compare["difference"]) if compare else []
    # each pool's words of this model, then (with --compare) the other model's beside them
    theirs = compare.get("words", {}) if compare else {}
    words_of = []
    for pool in dict.fromkeys([*atlas["words"], *theirs]):
        if pool in atlas["words"]:
            words_of.append((f"words ({pool})", atlas["words"][pool]))
        if pool in theirs:
            words_of.append((f"compare words ({pool})", theirs[pool]))
    header = ["block", "head"] + columns + [f"diff {d}" for d in differences] + [name for name, _ in words_of]
    rows = []
    for b in range(blocks):
        for h in range(num_heads):
            row = [b, h] + [(atlas["measures"] | atlas["views"])[c][b][h] for c in columns]
            row += [compare["difference"][d][b][h] for d in differences]
            for _, per_head in words_of:
                words = per_head.get(f"{b},{h}")
                row.append("; ".join(f"{t} ({s:.0%})" for t, s in words) if words else "")
            rows.append(row)
    return header, rows


def write_csv(atlas: dict, path: Path) -> Path:
    header, rows = table_rows(atlas)
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows([[("" if v is None else f"{v:.6g}" if isinstance(v, float) else v) for v in row] for row in rows])
    return write_atomic(path, text.getvalue())


def write_json(atlas: dict, path: Path) -> Path:
    return write_atomic(path, json.dumps(atlas, indent=1, allow_nan=False) + "\n")


def render_html(atlas: dict, maps: list[dict]) -> str:
    """The page: what was measured on which data, the heatmaps, the comparison, the table."""
    e = html.escape
    meta = atlas["meta"]
    domains = ", ".join(meta["domains"])
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>Head atlas: {e(meta['model'])}</title><style>{_STYLE}</style></head><body>",
           f"<h1>Head atlas: {e(meta['model'])}</h1>",
           f"<p>{e(meta['dataset'])}: {meta['images']} images from the <b>{e(meta['split'])}</b> of "
           f"<b>{e(domains)}</b> ({meta['images_per_domain']} per domain at most); the image embedding's "
           f"accuracy on them is {atlas['base_accuracy']:.3f} (mean over domains). "
           f"{atlas['grid'][0]} blocks x {atlas['grid'][1]} heads; precision {e(meta['precision'])}, "
           f"{meta['processes']} process(es).</p>",
           f"<p class='note'>Direct contributions: TextSpan's decomposition (Gandelsman, Efros & Steinhardt, ICLR "
           f"2024); the largest deviation of the summed direct terms from the model's embedding was "
           f"{atlas['decomposition_error']:.2e}. Zero ablation: AAT's edit of the attention weights. Domain MMD: "
           f"HAP's estimator. Hover a cell for its value; click a column of the table to sort.</p>"]
    sections: dict[str, list[dict]] = {}
    for item in maps:
        sections.setdefault(item["section"], []).append(item)
    for section, items in sections.items():
        out.append(f"<h2>{e(section)}</h2><div class='maps'>")
        for item in items:
            out.append(f"<figure>{svg_heatmap(item['matrix'], item['title'], item['caption'], item['diverging'])}"
                       f"<figcaption>{e(item['description'])}</figcaption></figure>")
        out.append("</div>")
    compare = atlas.get("compare")
    if compare:
        out.append(f"<h2>Against {e(compare['model'])}</h2><p>{e(compare['summary'])}</p>")
    header, rows = table_rows(atlas)
    out.append(f"<h2>Every head ({len(rows)})</h2>")
    if compare and compare.get("words"):
        out.append(f"<p class='note'>Columns <i>diff</i>: this model minus {e(compare['model'])}; "
                   f"<i>compare words</i>: the words of {e(compare['model'])}, beside this model's.</p>")
    out.append("<table class='sortable' id='heads'><thead><tr>")
    out += [f"<th>{e(h)}</th>" for h in header]
    out.append("</tr></thead><tbody>")
    for row in rows:
        cells = []
        for value in row:
            if isinstance(value, str):
                cells.append(f"<td class='words'>{e(value)}</td>")
            else:
                cells.append(f"<td data-value='{'' if value is None else value}'>{fmt(value)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append(f"</tbody></table><script>{_SORT_JS}</script></body></html>")
    return "\n".join(out) + "\n"
