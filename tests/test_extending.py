"""The README's "Extending dg-heads" steps, followed literally with a toy of each kind, through the
real CLI (in process, `run_main`): a method (a `DGModule` subclass in a module of its own, outside
the package, found by its `class_path` on the import path, and `configs/method/<name>.yaml`), a
dataset (a folder of one's own in DomainBed's layout, checked by `dg-heads prepare`, and
`configs/data/<name>.yaml` made from `configs/data/my_folder.yaml`) and a metric (one entry of
`CLASSIFICATION_METRICS` in `dg_heads/tasks/metrics.py`, made in process: macro-averaged, i.e.
balanced, accuracy).

One `fit --test_after_fit true` of the toy method on the toy dataset (tiny CLIP, one epoch), then
`predict` with the checkpoint that was tested: the toy metric of each test domain in
`metrics_test.json` must equal balanced accuracy counted by hand from `predictions.csv`. Leave out
any step and the test fails: no module or no method config (the CLI stops), no folder or no data
config (the CLI stops), no metric entry (no `*/balanced_acc*` keys), no `run_name` (another run folder).
"""

from __future__ import annotations

import csv
import json
import textwrap
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import CONFIGS, REPO, run_main

# Step "Adding a method" 1: one Python file, a `DGModule` subclass (here: only CLIP's temperature trains).
TOY_METHOD = '''
"""A toy method: CLIP zero-shot scoring with only the temperature (the logit scale) trained."""
from dg_heads.methods import DGModule


class TemperatureOnly(DGModule):
    @classmethod
    def run_name(cls, init_args) -> str:
        return "temperature"

    def configure_trainable(self) -> None:
        super().configure_trainable()  # freezes CLIP
        self.clip.logit_scale.requires_grad_(True)
'''

# Step "Adding a dataset" 1: the images in DomainBed's layout; class sizes differ (5 and 2 images per
# domain), so that balanced accuracy differs from plain accuracy.
TOY_DOMAINS = ("cam_a", "cam_b", "cam_c")
TOY_CLASSES = {"Desk_Lamp": 5, "cat": 2}
TEST_DOMAIN = "cam_c"


def _balanced_accuracy(metric_classes: int):
    """The toy metric (step "Adding a metric" 1): torchmetrics' macro-averaged accuracy."""
    from torchmetrics.classification import MulticlassAccuracy

    return MulticlassAccuracy(num_classes=metric_classes, average="macro")


def _write_toy_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for domain in TOY_DOMAINS:
        for cls, n in TOY_CLASSES.items():
            (root / "toy_cams" / domain / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
                    root / "toy_cams" / domain / cls / f"{i}.png")


def _by_hand(predictions: Path) -> dict[str, tuple[float, float]]:
    """(balanced accuracy, accuracy) per domain, counted from the rows of predictions.csv."""
    right, seen = defaultdict(lambda: defaultdict(int)), defaultdict(lambda: defaultdict(int))
    with predictions.open() as f:
        for row in csv.DictReader(f):
            seen[row["domain"]][row["label"]] += 1
            right[row["domain"]][row["label"]] += row["predicted"] == row["label"]
    return {d: (sum(right[d][c] / seen[d][c] for c in seen[d]) / len(seen[d]),
                sum(right[d].values()) / sum(seen[d].values())) for d in seen}


# what the README's steps name, in the order this file follows them
STEPS = {"Adding a method": ["`DGModule`", "`configs/method/<name>.yaml`", "`model.class_path`"],
         "Adding a dataset": ["`ROOT/<folder>/<domain>/<class>/<image>`", "`dg-heads prepare <folder> --root ROOT`",
                              "a copy of `configs/data/my_folder.yaml` with `dataset: <folder>`"],
         "Adding a metric": ["`CLASSIFICATION_METRICS` of `dg_heads/tasks/metrics.py`", "torchmetrics `Metric`"]}


def test_the_readme_lists_the_steps_this_file_follows():
    section = (REPO / "README.md").read_text().split("\n## Extending dg-heads\n", 1)[1].split("\n## ", 1)[0]
    for title, names in STEPS.items():
        steps = section.split(f"\n### {title}\n", 1)[1].split("\n### ", 1)[0]
        assert [name for name in names if name not in steps] == [], (title, steps)


@pytest.mark.slow
def test_a_toy_method_dataset_and_metric_take_the_readme_steps(tmp_path, monkeypatch):
    from dg_heads.tasks import metrics

    # the method: its module on the import path (PYTHONPATH in a shell), its config
    (tmp_path / "my_methods").mkdir()
    (tmp_path / "my_methods" / "__init__.py").write_text("")
    (tmp_path / "my_methods" / "temperature.py").write_text(TOY_METHOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "configs" / "method").mkdir(parents=True)
    method_config = tmp_path / "configs" / "method" / "temperature.yaml"
    method_config.write_text(textwrap.dedent(f"""\
        model:
          class_path: my_methods.temperature.TemperatureOnly
          init_args:
            clip: {CONFIGS / "backbone" / "default.yaml"}
            optim: {{lr: 1.0e-3, weight_decay: 0.0, warmup_steps: 0}}
        """))

    # the dataset: a folder under the data root, checked by `prepare`, and its data config
    root = tmp_path / "data"
    _write_toy_folder(root)
    prepared = run_main("prepare", "toy_cams", "--root", str(root), cwd=tmp_path)
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    assert "toy_cams" in prepared.stdout and "usable" in prepared.stdout, prepared.stdout
    (tmp_path / "configs" / "data").mkdir()
    data_config = tmp_path / "configs" / "data" / "toy_cams.yaml"
    template = (CONFIGS / "data" / "my_folder.yaml").read_text()
    assert "dataset: my_folder" in template
    data_config.write_text(template.replace("dataset: my_folder", "dataset: toy_cams"))

    # the metric: one entry (here made in process; in the repository a line of dg_heads/tasks/metrics.py)
    monkeypatch.setitem(metrics.CLASSIFICATION_METRICS, "balanced_acc", _balanced_accuracy)

    for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):  # the in-process CLI seeds: set here, unset after the test
        monkeypatch.setenv(name, "0")
    configs = ["--config", str(data_config), "--config", str(method_config),
               "--config", str(CONFIGS / "trainer" / "demo.yaml")]
    data_args = ["--data.init_args.root", str(root), "--data.init_args.test_domains", f"[{TEST_DOMAIN}]",
                 "--data.init_args.image_size", "32", "--data.init_args.num_workers", "0",
                 "--data.init_args.batch_size_per_domain", "4", "--data.init_args.eval_batch_size", "8"]
    fit = run_main("fit", *configs, *data_args, "--trainer.max_epochs", "1", "--test_after_fit", "true",
                   cwd=tmp_path)
    assert fit.returncode == 0, fit.stdout[-3000:] + fit.stderr[-3000:]

    run = tmp_path / "runs" / "toy_cams" / "temperature" / "version_0"  # the method's run_name
    tested = json.loads((run / "metrics_test.json").read_text())
    for stage, domains in (("val", ("cam_a", "cam_b")), ("test", (TEST_DOMAIN,))):
        for domain in domains:
            assert f"{stage}/acc/{domain}" in tested and f"{stage}/balanced_acc/{domain}" in tested, sorted(tested)
        assert f"{stage}/balanced_acc" in tested, sorted(tested)
    checkpoints = sorted((run / "checkpoints").glob("best*.ckpt"))
    assert len(checkpoints) == 1, checkpoints
    state = torch.load(checkpoints[0], map_location="cpu", weights_only=False)["state_dict"]
    # the checkpoint keeps the class-prompt classifier and what the method trains: the temperature only
    assert sorted(state) == ["classifier", "clip.logit_scale"], sorted(state)

    predicted = run_main("predict", *configs, *data_args, "--ckpt_path", str(checkpoints[0]), cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stdout[-3000:] + predicted.stderr[-3000:]
    counted = _by_hand(next((tmp_path / "runs" / "toy_cams" / "temperature").rglob("predictions.csv")))
    assert set(counted) == {TEST_DOMAIN}
    balanced, plain = counted[TEST_DOMAIN]
    assert balanced != pytest.approx(plain)  # the toy data tells the two apart
    assert tested[f"test/balanced_acc/{TEST_DOMAIN}"] == pytest.approx(balanced, abs=1e-6)
    assert tested["test/balanced_acc"] == pytest.approx(balanced, abs=1e-6)  # one test domain: the mean is it
    assert tested[f"test/acc/{TEST_DOMAIN}"] == pytest.approx(plain, abs=1e-6)
