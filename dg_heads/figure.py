"""A result table as a figure: per test domain, each method's mean test accuracy as a bar with
its standard error as an error bar, and (for `collect --compare`) a paper's figure as a
horizontal mark across the bar. Drawn with Pillow (no plotting dependency), as heatmaps are."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

# colour-blind-safe qualitative colours (Okabe-Ito), one per method, in table order
COLOURS = [(0, 114, 178), (230, 159, 0), (0, 158, 115), (204, 121, 167), (86, 180, 233),
           (213, 94, 0), (240, 228, 66), (0, 0, 0)]
BAR, GAP, LEFT, RIGHT, TOP, BOTTOM, PLOT_H = 18, 22, 52, 16, 34, 44, 260
AXIS, GRID, TEXT, MARK = (60, 60, 60), (225, 225, 225), (20, 20, 20), (200, 0, 0)


def colour(index: int) -> tuple[int, int, int]:
    return COLOURS[index % len(COLOURS)]


def draw_table(table, marks: dict[tuple[str, str], float] | None = None, title: str | None = None,
               ) -> tuple[Image.Image, dict[tuple[str, str], tuple[int, int, int, int]]]:
    """The figure of a `collect.Table` and where each (method, domain) bar is (x0, y0, x1, y1);
    the y axis is accuracy in percent, 0 to 100. `marks`: a figure per (method, domain), drawn
    as a red line 3 pixels wide across that bar (and past it), e.g. a paper's."""
    methods, domains = list(table.rows), list(table.domains)
    group_w = max(1, len(methods)) * BAR + GAP
    font = ImageFont.load_default()
    legend_w = max([_text_w(font, m) for m in methods] + [0]) + 40
    title = title or (f"{table.dataset}: test accuracy (%) per held-out domain, mean ± standard error over "
                      f"trial seeds ({table.selection})")
    width = max(LEFT + len(domains) * group_w + RIGHT + legend_w, _text_w(font, title) + 12)
    height = TOP + PLOT_H + BOTTOM
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)

    def y_of(value: float) -> int:
        return TOP + round(PLOT_H * (1 - min(max(value, 0.0), 100.0) / 100))

    for tick in range(0, 101, 20):  # grid and y labels
        y = y_of(tick)
        draw.line([(LEFT, y), (LEFT + len(domains) * group_w, y)], fill=GRID if tick else AXIS)
        label = str(tick)
        draw.text((LEFT - 6 - _text_w(font, label), y - 5), label, fill=TEXT, font=font)
    draw.line([(LEFT, TOP), (LEFT, y_of(0))], fill=AXIS)
    draw.text((4, 4), title, fill=TEXT, font=font)

    bars = {}
    for d, domain in enumerate(domains):
        x_group = LEFT + GAP // 2 + d * group_w
        for m, method in enumerate(methods):
            if domain not in table.rows[method]:
                continue
            mean, se, _ = table.rows[method][domain]
            x0, x1 = x_group + m * BAR, x_group + (m + 1) * BAR - 3
            box = (x0, y_of(mean), x1, y_of(0))
            draw.rectangle(box, fill=colour(m))
            bars[(method, domain)] = box
            if se > 0:  # the error bar: a whisker from mean - se to mean + se
                xc = (x0 + x1) // 2
                draw.line([(xc, y_of(mean + se)), (xc, y_of(mean - se))], fill=AXIS, width=1)
                for value in (mean + se, mean - se):
                    draw.line([(xc - 3, y_of(value)), (xc + 3, y_of(value))], fill=AXIS, width=1)
            if marks and (method, domain) in marks:
                y = y_of(marks[(method, domain)])
                draw.rectangle((x0 - 1, y - 1, x1 + 1, y + 1), fill=MARK)
        label = str(domain)
        xc = x_group + (len(methods) * BAR) // 2
        draw.text((xc - _text_w(font, label) // 2, y_of(0) + 6), label, fill=TEXT, font=font)

    x_legend = LEFT + len(domains) * group_w + 16
    for m, method in enumerate(methods):  # legend
        y = TOP + 4 + 16 * m
        draw.rectangle((x_legend, y, x_legend + 10, y + 10), fill=colour(m))
        draw.text((x_legend + 16, y), method, fill=TEXT, font=font)
    return image, bars


def _text_w(font, text: str) -> int:
    left, _, right, _ = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font)
    return right - left


def write_figure(table, path: Path, marks: dict[tuple[str, str], float] | None = None,
                 title: str | None = None) -> Path:
    image, _ = draw_table(table, marks, title)
    image.save(path, format="PNG")
    return path
