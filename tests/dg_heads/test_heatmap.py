"""`dg_heads.heatmap`: a blocks x heads matrix as a TensorBoard image (each value's colour from its
place in the matrix's range, on a fixed ramp) and as JSON / CSV files in the run folder."""

import io
import json
import types

import numpy as np
import pytest
import torch

from dg_heads.heatmap import heatmap_image, log_heatmap, matrix_files, write_run_matrix

# the ramp's five colours (dark blue -> teal -> yellow), written out: the value's place in the
# matrix's range, 0 .. 1, picks them at 0, 1/4, 1/2, 3/4 and 1, linearly between
RAMP = [(0.27, 0.00, 0.33), (0.23, 0.32, 0.55), (0.13, 0.57, 0.55), (0.37, 0.79, 0.38), (0.99, 0.91, 0.14)]
MATRIX = torch.tensor([[0.0, 1.0, 2.0],
                       [3.0, 4.0, 8.0]])  # range 0..8: 0: RAMP[0], 1: halfway RAMP[0..1], 4: RAMP[2], 8: RAMP[4]
EXPECTED = {(0, 0): RAMP[0], (0, 1): tuple((a + b) / 2 for a, b in zip(RAMP[0], RAMP[1])), (1, 1): RAMP[2],
            (1, 2): RAMP[4]}


def test_each_cell_is_a_square_of_its_values_colour():
    image = heatmap_image(MATRIX, cell=4)
    assert image.shape == (3, 2 * 4, 3 * 4)
    for (row, col), rgb in EXPECTED.items():
        square = image[:, row * 4:(row + 1) * 4, col * 4:(col + 1) * 4]
        assert torch.allclose(square, torch.tensor(rgb)[:, None, None].expand(3, 4, 4), atol=1e-6), (row, col)


def test_the_colours_follow_the_range_not_the_values():
    """A shifted, scaled matrix draws the same image; a constant one is the ramp's first colour, not NaN."""
    assert torch.allclose(heatmap_image(MATRIX * 0.25 - 5), heatmap_image(MATRIX), atol=1e-6)
    flat = heatmap_image(torch.full((2, 2), 0.3), cell=1)
    assert torch.allclose(flat, torch.tensor(RAMP[0])[:, None, None].expand(3, 2, 2))


def test_the_tensorboard_image_is_a_png_of_the_heatmap(tmp_path):
    """Logged through a TensorBoard writer (what Lightning's `TensorBoardLogger.experiment` is) and
    read back from the event file: a PNG of 3x2 cells of 16 pixels, each cell's colour as above (8 bits)."""
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    log_heatmap(types.SimpleNamespace(logger=types.SimpleNamespace(experiment=writer), global_step=7), "gates", MATRIX)
    writer.close()
    (event,) = EventAccumulator(str(tmp_path), size_guidance={"images": 0}).Reload().Images("gates")
    assert event.step == 7 and (event.width, event.height) == (48, 32)
    png = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB")).astype(int)
    assert png.shape == (32, 48, 3)
    for (row, col), rgb in EXPECTED.items():
        pixel = png[row * 16 + 8, col * 16 + 8]
        assert np.abs(pixel - 255 * np.array(rgb)).max() <= 1, (row, col, pixel)


def test_no_logger_or_one_without_images_is_skipped():
    log_heatmap(types.SimpleNamespace(logger=None, global_step=0), "gates", MATRIX)
    log_heatmap(types.SimpleNamespace(logger=types.SimpleNamespace(experiment=object()), global_step=0), "g", MATRIX)


def test_the_json_and_csv_texts():
    texts = matrix_files(torch.tensor([[0.5, 1 / 3], [-2.0, 1e-7]]), row_name="layer")
    assert texts[".csv"].splitlines() == ["layer,head_0,head_1", "0,0.500000,0.333333", "1,-2.000000,0.000000"]
    assert json.loads(texts[".json"]) == {"0": [0.5, 0.333333], "1": [-2.0, 0.0]}


@pytest.mark.parametrize("rank_zero", [True, False])
def test_the_files_are_written_in_the_run_folder_on_rank_0_only(tmp_path, rank_zero):
    trainer = types.SimpleNamespace(is_global_zero=rank_zero, logger=types.SimpleNamespace(log_dir=str(tmp_path)))
    written = write_run_matrix(trainer, "gates", torch.tensor([[1.0, 2.0]]))
    if not rank_zero:
        assert written == [] and list(tmp_path.iterdir()) == []
        return
    assert written == [tmp_path / "gates.json", tmp_path / "gates.csv"]
    assert (tmp_path / "gates.csv").read_text().splitlines() == ["block,head_0,head_1", "0,1.000000,2.000000"]
    assert json.loads((tmp_path / "gates.json").read_text()) == {"0": [1.0, 2.0]}
