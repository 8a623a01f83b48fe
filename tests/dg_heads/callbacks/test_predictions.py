"""`lightning predict` writes predictions.csv in the run folder: id, domain, label, predicted,
probability, one row per image, in the table's order also when several processes predicted."""

import csv
import io
from types import SimpleNamespace

import pytest
import torch

from dg_heads.reporting import predictions_csv
from tests.conftest import demo_configs, run_main


def _fake_datamodule():
    ids = [f"d{r // 4}/c{r % 2}/{r:03d}.png" for r in range(8)]
    return SimpleNamespace(folder_class_names=["c0", "c1"],
                           describe_rows=lambda rows: [(ids[r], f"d{r // 4}", f"c{r % 2}") for r in rows])


def test_shares_of_several_processes_become_one_file_in_table_order(tmp_path):
    # DDP without padding: rank 0 predicted rows 0, 2, 4, 6 and rank 1 rows 1, 3, 5, 7
    rank0 = torch.tensor([[0, 1, 0.9], [2, 0, 0.6], [4, 1, 0.7], [6, 0, 0.8]], dtype=torch.float64)
    rank1 = torch.tensor([[1, 1, 0.5], [3, 1, 0.55], [5, 0, 0.95], [7, 1, 0.99]], dtype=torch.float64)
    rows = list(csv.reader(io.StringIO(predictions_csv([rank0, rank1], _fake_datamodule()))))
    assert rows[0] == ["id", "domain", "label", "predicted", "probability"]
    assert [r[0] for r in rows[1:]] == [f"d{r // 4}/c{r % 2}/{r:03d}.png" for r in range(8)]
    assert rows[1] == ["d0/c0/000.png", "d0", "c0", "c1", "0.900000"]
    assert rows[6] == ["d1/c1/005.png", "d1", "c1", "c0", "0.950000"]


@pytest.mark.slow
def test_predict_writes_every_images_prediction_into_the_run_folder(data_root, tmp_path):
    result = run_main("predict", *demo_configs("zero_shot"),
                      "--data.init_args.num_workers", "0",
                      "--data.init_args.eval_batch_size", "100", "--trainer.limit_predict_batches", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    path = tmp_path / "runs/rotated_digits/zero_shot/version_0/predictions.csv"
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 300 and "written to runs/rotated_digits/zero_shot/version_0/predictions.csv" in result.stdout
    classes = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}
    assert len({r["id"] for r in rows}) == 300
    for row in rows:
        domain, label, _ = row["id"].split("/")
        assert row["domain"] == domain == "75" and row["label"] == label and row["predicted"] in classes
        assert 0.1 <= float(row["probability"]) <= 1.0  # the top class of 10 has at least 1/10
    # the first batch in DomainBed's sample order (class folders sorted, then files)
    assert rows[0]["id"] == "75/eight/" + sorted(p.name for p in (data_root / "RotatedDigits/75/eight").iterdir())[0]
