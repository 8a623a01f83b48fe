"""The atlas's files from a hand-built atlas: every head on the page, in the table and the CSV; the
heatmaps' colours at the ends of their scale (no model, no data)."""

import csv
import re

from dg_heads.atlas import page

ACCURACY = [[0.1, 0.5, 0.9], [0.3, None, 0.7]]  # 2 blocks x 3 heads; one cell not measured
ATLAS = {
    "meta": {"model": "HAP <test>", "dataset": "rotated_digits", "domains": ["0", "15"], "split": "out splits",
             "images": 6, "images_per_domain": 3, "precision": "32", "processes": 1},
    "grid": [2, 3], "base_accuracy": 0.625, "decomposition_error": 1.5e-6,
    "measures": {"head_accuracy": ACCURACY, "domain_mmd": [[0.0, 0.25, 0.5], [1.0, 2.0, 4.0]]},
    "views": {"gate": [[1.0, 1.0, 1.0], [0.5, 2.0, 0.5]]},
    "words": {"general": {"1,2": [["a red square", 0.75], ["thin strokes", 0.125]]}},
}


def _maps() -> list[dict]:
    return [{"name": name, "section": "Measures", "title": f"title of {name}", "caption": "rotated digits",
             "description": f"about {name}", "matrix": matrix, "diverging": False}
            for name, matrix in ATLAS["measures"].items()]


def test_the_page_names_every_head_in_each_map_and_in_the_table():
    text = page.render_html(ATLAS, _maps())
    assert "<title>Head atlas: HAP &lt;test&gt;</title>" in text  # the model's name, escaped
    for b in range(2):
        for h in range(3):  # each map's cell says what it holds on hover
            assert text.count(f"<title>block {b}, head {h}: ") == 2
    assert "<title>block 0, head 2: 0.9</title>" in text and "<title>block 1, head 1: n/a</title>" in text
    body = re.search(r"<tbody>(.*)</tbody>", text, re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", body)
    assert len(rows) == 6
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in rows]
    assert [c[:2] for c in cells] == [["0", "0"], ["0", "1"], ["0", "2"], ["1", "0"], ["1", "1"], ["1", "2"]]
    assert cells[5][2:] == ["0.7", "4", "0.5", "a red square (75%); thin strokes (12%)"]
    assert cells[4][2] == "n/a" and cells[0][-1] == ""


def test_the_csv_has_one_row_per_head_with_every_column(tmp_path):
    path = page.write_csv(ATLAS, tmp_path / "atlas.csv")
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["block", "head", "head_accuracy", "domain_mmd", "gate", "words (general)"]
    assert rows[1:] == [
        ["0", "0", "0.1", "0", "1", ""], ["0", "1", "0.5", "0.25", "1", ""], ["0", "2", "0.9", "0.5", "1", ""],
        ["1", "0", "0.3", "1", "0.5", ""], ["1", "1", "", "2", "2", ""],
        ["1", "2", "0.7", "4", "0.5", "a red square (75%); thin strokes (12%)"]]


def test_a_heatmaps_cells_take_the_ends_of_its_scale():
    """The smallest value is the ramp's dark end, the largest its yellow end, an unmeasured cell
    grey; a diverging map is symmetric about 0 (white)."""
    image = page.png_heatmap(ACCURACY, "accuracy", "caption", cell=24)
    left, top, cell = 46, 40, 24  # where png_heatmap puts its grid

    def centre(b, h):
        return image.getpixel((left + h * cell + cell // 2, top + b * cell + cell // 2))

    assert centre(0, 0) == (68, 1, 84) and centre(0, 2) == (253, 231, 37) and centre(1, 1) == (215, 215, 215)
    assert page.chw(image).shape == (3, image.size[1], image.size[0])
    assert page.scale_of([[-1.0, 3.0]], diverging=True) == (-3.0, 3.0)
    assert page.colour(0.0, -3.0, 3.0, diverging=True) == (247, 247, 247)
    assert page.colour(-3.0, -3.0, 3.0, diverging=True) == (33, 102, 172)
