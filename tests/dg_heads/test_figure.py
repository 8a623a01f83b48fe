"""`dg_heads.figure`: a result table as a bar chart (PNG), read back by decoding the file: a bar per
(method, test domain) in the method's colour, heights in the ratio of the means on one baseline, the
standard error as a whisker, a paper's figure as a red mark. (`collect` writes it beside its tables:
`test_collect.py`, `test_sweep.py`.)"""

import numpy as np
from PIL import Image

from dg_heads.collect import Table
from dg_heads.figure import draw_table, write_figure
from tests.dg_heads.test_collect import check_bars

BLUE, ORANGE, GREY = (0, 114, 178), (230, 159, 0), (60, 60, 60)  # Okabe-Ito's first two; the axes' grey


def _table():
    return Table(dataset="pacs", domains=["photo", "sketch"], expected_seeds=3,
                 rows={"hap": {"photo": (80.0, 0.0, 3), "sketch": (40.0, 10.0, 3)},
                       "lora": {"photo": (20.0, 0.0, 1)}})  # lora on sketch: not run (no bar)


def _decoded(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def test_bars_in_the_ratio_of_the_means_and_a_papers_mark(tmp_path):
    path = write_figure(_table(), tmp_path / "pacs.png", marks={("hap", "photo"): 60.0})
    assert path == tmp_path / "pacs.png" and Image.open(path).format == "PNG"
    # hap: 80 and 40 (its bars 4 : 2), lora: 20 (1), one baseline; the mark at 60 across hap's photo bar
    check_bars(path, {"hap": [80.0, 40.0], "lora": [20.0]}, marks={"hap": 60.0})


def test_the_bars_it_returns_are_where_it_drew_them_and_the_whisker_spans_two_standard_errors(tmp_path):
    image, bars = draw_table(_table())
    assert set(bars) == {("hap", "photo"), ("hap", "sketch"), ("lora", "photo")}
    image.save(tmp_path / "f.png")
    png = _decoded(tmp_path / "f.png")
    for (method, _), (x0, y0, x1, y1) in bars.items():
        colour = BLUE if method == "hap" else ORANGE
        assert tuple(png[(y0 + y1) // 2, x0 + 1]) == colour and tuple(png[y1, x1]) == colour
        assert tuple(png[y1 + 2, x0 + 1]) != colour and tuple(png[y0 - 2, x0 + 1]) != colour  # and no further
    x0, y0, x1, y1 = bars["hap", "sketch"]  # mean 40, SE 10: a whisker from 30 to 50
    per_point = (y1 - y0) / 40  # pixels per accuracy point, from this bar
    column = (png[:, (x0 + x1) // 2] == GREY).all(axis=1)
    rows = np.flatnonzero(column[: y1 - 1])  # above the baseline (itself grey)
    assert abs((rows.max() - rows.min()) - 20 * per_point) <= 1, (rows.min(), rows.max(), per_point)
    assert abs((y1 - rows.mean()) - 40 * per_point) <= 1  # centred on the mean
    x0, y0, x1, y1 = bars["hap", "photo"]  # SE 0: no whisker
    assert not (png[y0 - 5:y1 - 1, (x0 + x1) // 2] == GREY).all(axis=1).any()


def test_accuracies_outside_0_to_100_stay_inside_the_plot():
    table = Table(dataset="vlcs", domains=["SUN09"], expected_seeds=1,
                  rows={"a": {"SUN09": (100.0, 0.0, 1)}, "b": {"SUN09": (130.0, 0.0, 1)},
                        "c": {"SUN09": (-5.0, 0.0, 1)}})
    _, bars = draw_table(table)
    assert bars["a", "SUN09"][1] == bars["b", "SUN09"][1]  # 130 drawn as 100
    assert bars["c", "SUN09"][1] == bars["c", "SUN09"][3]  # -5 drawn as 0: no height


def test_a_long_title_widens_the_figure():
    short, _ = draw_table(_table(), title="PACS")
    long, _ = draw_table(_table(), title="PACS " + "x" * 400)
    assert long.width > short.width and long.height == short.height
