"""Every shipped composition of configs/, as a cluster user runs it, on a small fake copy of its
dataset with the tiny backbone swapped in: a few training steps, validation and test under
`bf16-mixed`; each method (on a dataset of its own) also as 2-process DDP (gloo on the CPU). CPU
bf16 autocast and gloo catch most of the dtype and collective mistakes a GPU cluster would meet
first; on a machine with a GPU, `make gpu-check` runs the same matrix on CUDA
(DG_HEADS_TEST_ACCELERATOR=gpu).

Shipped compositions: the GPU preset x every dataset x every method, the HAP variants on PACS,
and every method's demo (RotatedDigits, the method, the demo preset last); every retrieval data
config (`dg_heads.data.RetrievalDataModule`) x every method that applies to retrieval (not the
linear probe nor HAP's MMD: they refuse it), fine-tuning and an AAT search also as 2-process DDP."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from dg_heads.data.registry import CAPTION_DATASETS, DATASETS, get_dataset
from tests.conftest import CONFIGS, make_benchmark, make_domainbed, run_cli, run_main
from tests.dg_heads.data.test_retrieval import make_caption_copy

pytestmark = pytest.mark.slow

# `make gpu-check` runs this matrix on a CUDA machine (`gpu`); CI and `make test` on the CPU.
ACCELERATOR = os.environ.get("DG_HEADS_TEST_ACCELERATOR", "cpu")
BENCHMARKS = [name for name in DATASETS if not get_dataset(name).builtin]
METHODS = sorted(p.stem for p in (CONFIGS / "method").glob("*.yaml"))

def _is_retrieval(stem: str) -> bool:
    data = (yaml.safe_load((CONFIGS / "data" / f"{stem}.yaml").read_text()) or {}).get("data", {})
    return str(data.get("class_path", "")).endswith("RetrievalDataModule")


RETRIEVAL_FILES = sorted(p.stem for p in (CONFIGS / "data").glob("*.yaml") if _is_retrieval(p.stem))
DATASET_FILES = sorted(p.stem for p in (CONFIGS / "data").glob("*.yaml") if not _is_retrieval(p.stem))
NOT_FOR_RETRIEVAL = {"linear_probe", "hap"}  # no classes to probe; HAP's MMD needs source domains
RETRIEVAL_METHODS = [m for m in METHODS if m not in NOT_FOR_RETRIEVAL]
HAP_VARIANTS = sorted(p.stem for p in (CONFIGS / "method" / "hap_variants").glob("*.yaml"))
# configs/data/my_folder.yaml: the example of an own dataset (no registry entry), run on a fake
# folder of that name with these domains and classes
OWN = {"my_folder": {"cam_a": ["cat", "dog"], "cam_b": ["cat", "dog"], "cam_c": ["cat", "dog"]}}


def _files(composition: str) -> list[Path]:
    """`gpu/pacs/hap`, `gpu/pacs/hap+gating_only` (a HAP variant overlay), `demo/rotated_digits/hap`:
    the files in the order the README gives (the demo preset goes last: it replaces the method's
    backbone, learning rate and run length; the CLI refuses it before the method file)."""
    preset, dataset, method = composition.split("/")
    method, _, variant = method.partition("+")
    files = [CONFIGS / f"data/{dataset}.yaml", CONFIGS / f"method/{method}.yaml"]
    files += [CONFIGS / f"method/hap_variants/{variant}.yaml"] if variant else []
    preset_file = CONFIGS / f"trainer/{preset}.yaml"
    return files + [preset_file] if preset == "demo" else [preset_file, *files]


COMPOSITIONS = ([f"gpu/{d}/{m}" for d in DATASET_FILES if d not in OWN for m in METHODS]
                + [f"gpu/{d}/{m}" for d in OWN for m in ("lora", "hap")]
                + [f"gpu/pacs/hap+{v}" for v in HAP_VARIANTS]
                + [f"demo/rotated_digits/{m}" for m in METHODS]
                + [f"gpu/digit_captions/{m}" for m in RETRIEVAL_METHODS]
                # the other retrieval files differ only in the dataset (a fake copy here): two methods each
                + [f"gpu/{d}/{m}" for d in RETRIEVAL_FILES if d != "digit_captions" for m in ("zero_shot", "finetune")])
# 2-process DDP: every method once, the benchmarks taking turns (the data files differ only in
# the dataset, which the in-process matrix covers with every method).
DDP_COMPOSITIONS = [f"gpu/{BENCHMARKS[i % len(BENCHMARKS)]}/{m}" for i, m in enumerate(METHODS)]
# retrieval under DDP: the contrastive training and an AAT search (its recall gathered over the processes)
DDP_COMPOSITIONS += ["gpu/digit_captions/aat_scan"] + [
    f"gpu/{d}/finetune" for d in [d for d in RETRIEVAL_FILES if d != "digit_captions"][:1]]


def _composed(files: list[Path]) -> dict:
    """The merged model and data sections of the composed files (enough to choose overrides)."""
    out: dict = {}
    for f in files:
        for section, value in (yaml.safe_load(f.read_text()) or {}).items():
            if isinstance(value, dict) and isinstance(out.get(section), dict):
                out[section] = {**out[section], **value,
                                "init_args": {**out[section].get("init_args", {}), **value.get("init_args", {})}}
            else:
                out[section] = value
    return out


BACKBONE = CONFIGS / "backbone/default.yaml"


def _backbone(method_file: Path):
    """A method file's `model.init_args.clip`: a backbone file (read relative to the method file), or inline."""
    clip = yaml.safe_load(method_file.read_text())["model"]["init_args"].get("clip")
    return (method_file.parent / clip).resolve() if isinstance(clip, str) else clip


def test_the_matrix_covers_every_shipped_config():
    used = {f for c in COMPOSITIONS for f in _files(c)}
    used |= {b for f in used if f.parent == CONFIGS / "method" and isinstance(b := _backbone(f), Path)}  # read by them
    shipped = set(CONFIGS.rglob("*.yaml"))
    assert shipped == used, f"configs no composition runs: {sorted(map(str, shipped - used))}"
    assert set(DATASET_FILES) == set(DATASETS) | set(OWN)
    assert "digit_captions" in RETRIEVAL_FILES and set(RETRIEVAL_FILES) <= set(CAPTION_DATASETS)
    assert {"zero_shot", "linear_probe", "finetune", "lora", "hap", "aat_scan", "aat_ga", "aat_bp"} <= set(METHODS)
    assert set(BENCHMARKS) | {"digit_captions"} <= {c.split("/")[1] for c in DDP_COMPOSITIONS}
    assert {c.split("/")[2] for c in DDP_COMPOSITIONS} == set(METHODS)


def test_every_method_file_names_the_one_backbone_file():
    """The backbone is written once: every method file reads it from configs/backbone/default.yaml
    (a user changes it there), which holds the papers' CLIP ViT-B/16 with OpenAI weights."""
    assert {m: _backbone(CONFIGS / f"method/{m}.yaml") for m in METHODS} == {m: BACKBONE for m in METHODS}
    assert yaml.safe_load(BACKBONE.read_text()) == {"model_name": "ViT-B-16", "pretrained": "openai"}


def test_lora_is_hap_with_plain_lora_and_no_gates():
    """lora.yaml is hap.yaml but for three keys (the HAP paper's plain-LoRA row). jsonargparse cannot
    derive one file from the other: a file that includes hap.yaml (`config: hap.yaml`) and sets its
    own `model:` replaces the included model section whole instead of merging into it. So this
    test keeps the two from drifting apart (change hap.yaml's optimiser, backbone or LoRA targets
    and lora.yaml must follow)."""
    hap = yaml.safe_load((CONFIGS / "method/hap.yaml").read_text())
    lora = yaml.safe_load((CONFIGS / "method/lora.yaml").read_text())
    hap["model"]["init_args"]["lora"]["head_aware"] = False
    hap["model"]["init_args"]["gating"] = {"enabled": False, "mmd_weight": 0.0}
    assert lora == hap


@pytest.mark.parametrize("files, overlay, chooser", [
    (["trainer/demo.yaml", "data/rotated_digits.yaml", "method/finetune.yaml"], "trainer/demo.yaml",
     "method/finetune.yaml"),
    (["trainer/gpu.yaml", "data/pacs.yaml", "method/hap_variants/gating_only.yaml", "method/hap.yaml"],
     "method/hap_variants/gating_only.yaml", "method/hap.yaml"),
])
def test_an_overlay_before_the_method_file_is_one_error_line(files, overlay, chooser, tmp_path):
    """The order of the --config files is enforced in one place, the CLI: a file that changes the
    model without choosing it (the demo preset, a HAP variant) given before the method file."""
    args = [a for f in files for a in ("--config", str(CONFIGS / f))]
    result = run_main("fit", *args, cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: --config {CONFIGS / overlay} changes the model (a `model:` section without class_path) but "
        f"comes before --config {CONFIGS / chooser}, which chooses the model (model.class_path): give "
        f"{CONFIGS / overlay} after it (later files win)"]
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory, data_root) -> Path:
    """A data root with RotatedDigits and a small fake copy of every benchmark (every domain and
    class folder; at least ~20 images per domain so every split and batch has images)."""
    root = tmp_path_factory.mktemp("benchmarks")
    (root / "RotatedDigits").symlink_to(data_root / "RotatedDigits")
    for name in BENCHMARKS:
        make_benchmark(root, name, per_class=max(1, -(-20 // len(get_dataset(name).classes))), size=12)
    for name, domains in OWN.items():
        make_domainbed(root, name, domains, per_class=10, size=12)
    for name in RETRIEVAL_FILES:
        if name != "digit_captions":  # built in; the others: a fake save_to_disk copy
            make_caption_copy(root / "captions" / name)
    return root


# The run length of a case: 2 steps in one epoch (validation at its end). The DDP cases run as a
# user's job does: 4 steps over epochs of 3 (validation at step 2, mid-epoch; an epoch end with no
# validation at step 3; validation at step 4, where training ends mid-epoch), then the test.
STEPS = ["--trainer.max_steps", "2", "--trainer.limit_train_batches", "2", "--trainer.val_check_interval", "2"]
DDP_STEPS = ["--trainer.max_steps", "4", "--trainer.limit_train_batches", "3", "--trainer.val_check_interval", "2"]


def _arguments(composition: str, root: Path, steps: list[str] = STEPS) -> tuple[list[str], dict]:
    files = _files(composition)
    composed = _composed(files)
    model, data = composed["model"], composed["data"]["init_args"]
    if composition.split("/")[1] in RETRIEVAL_FILES:
        return _retrieval_arguments(files, model, data, composition, root, steps)
    domains = list(OWN[data["dataset"]]) if data["dataset"] in OWN else get_dataset(data["dataset"]).domains
    test_domains = data.get("test_domains") or [domains[0]]
    args = [a for f in files for a in ("--config", str(f))]
    args += ["--model.init_args.clip.model_name", "dg-tiny-vit", "--model.init_args.clip.pretrained", "null",
             "--data.init_args.root", str(root), "--data.init_args.test_domains", json.dumps(test_domains),
             "--data.init_args.image_size", "32", "--data.init_args.num_workers", "0",
             "--data.init_args.batch_size_per_domain", "4", "--data.init_args.eval_batch_size", "16",
             "--trainer.accelerator", ACCELERATOR, "--trainer.precision", "bf16-mixed", *steps,
             "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "2",
             "--trainer.log_every_n_steps", "1"]  # Lightning's defaults otherwise: progress bar on
    if model["class_path"].endswith("AttentionAblation"):
        args += ["--model.init_args.search.max_scoring_batches", "1",
                 "--model.init_args.search.ga.population", "4", "--model.init_args.search.ga.generations", "2"]
    return args, {"test_domains": test_domains, "model": model, "composition": composition}


def _retrieval_arguments(files: list[Path], model: dict, data: dict, composition: str, root: Path,
                         steps: list[str]) -> tuple[list[str], dict]:
    """A retrieval composition on a few images of its data (the built-in DigitCaptions, else the
    fake copy in `fake_root`)."""
    args = [a for f in files for a in ("--config", str(f))]
    if data["dataset"] != "digit_captions":
        args += ["--data.init_args.source", json.dumps({"path": str(root / "captions" / data["dataset"])})]
    args += ["--model.init_args.clip.model_name", "dg-tiny-vit", "--model.init_args.clip.pretrained", "null",
             "--data.init_args.image_size", "32", "--data.init_args.num_workers", "0",
             "--data.init_args.max_images", "24", "--data.init_args.batch_size", "4",
             "--data.init_args.eval_batch_size", "8",
             "--trainer.accelerator", ACCELERATOR, "--trainer.precision", "bf16-mixed", *steps,
             "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "2",
             "--trainer.log_every_n_steps", "1"]
    if model["class_path"].endswith("AttentionAblation"):
        args += ["--model.init_args.search.max_scoring_batches", "1",
                 "--model.init_args.search.ga.population", "4", "--model.init_args.search.ga.generations", "2"]
    return args, {"test_domains": [data["dataset"]], "model": model, "composition": composition, "retrieval": True}


def _trains(model: dict) -> bool:
    return model.get("init_args", {}).get("mode") != "zero_shot"


def _takes_steps(model: dict) -> bool:
    """Trains by optimiser steps (AAT's scan and GA search, then stop: no step)."""
    strategy = (model.get("init_args", {}).get("search") or {}).get("strategy")
    return _trains(model) and strategy in (None, "bp")


# The run folder's name (TRAINER_DEFAULTS' `{method}`) where it is not the method file's name.
RUN_NAMES = {"hap+ha_lora_only": "ha_lora", "hap+gating_only": "gating",
             "hap+plain_lora_gating": "lora_gating", "hap+mmd_on_lora": "hap_mmd_lora",
             "hap+mmd_on_both": "hap_mmd_both", "hap+mmd_gates_local": "hap_mmd_gates_local"}


def _check_run(folder: Path, meta: dict) -> None:
    """Per-domain test metrics, in `runs/<dataset>/<method>/` (named from what ran)."""
    _, dataset, method = meta["composition"].split("/")
    run_folder = folder / "runs" / dataset / RUN_NAMES.get(method, method)
    found = sorted(p.name for p in (folder / "runs" / dataset).iterdir())
    assert run_folder.is_dir(), (f"the run is in runs/{dataset}/{found}, not in runs/{dataset}/{run_folder.name}: "
                                 f"a method whose run_name is not its config file's name goes in RUN_NAMES")
    metrics = json.loads(next(run_folder.rglob("metrics_test.json")).read_text())
    if meta.get("retrieval"):
        assert 0.0 <= metrics["test/rsum"] <= 600.0 and 0.0 <= metrics["test/i2t_r1"] <= 100.0
        assert all(metrics[f"test/n/{d}"] > 0 for d in meta["test_domains"])
        return
    for domain in meta["test_domains"]:
        assert 0.0 <= metrics[f"test/acc/{domain}"] <= 1.0
        assert metrics[f"test/n/{domain}"] > 0


def _scalar_steps(folder: Path, meta: dict, tag: str) -> list[int]:
    """The steps at which the run's TensorBoard events hold `tag` (the fit's event files)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, dataset, method = meta["composition"].split("/")
    steps = []
    for events in sorted((folder / "runs" / dataset / RUN_NAMES.get(method, method)).rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        if tag in accumulator.Tags()["scalars"]:
            steps += [event.step for event in accumulator.Scalars(tag)]
    return sorted(steps)


@pytest.mark.parametrize("composition", COMPOSITIONS)
def test_config_runs_under_bf16_mixed(composition, fake_root, tmp_path):
    args, meta = _arguments(composition, fake_root)
    if _trains(meta["model"]):
        result = run_main("fit", *args, "--test_after_fit", "true", cwd=tmp_path)
    else:  # zero-shot trains nothing: validate and test
        result = run_main("validate", *args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        result = run_main("test", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    _check_run(tmp_path, meta)


@pytest.mark.parametrize("composition", DDP_COMPOSITIONS)
def test_method_runs_as_two_process_ddp(composition, fake_root, tmp_path):
    """As a user's multi-GPU job: Lightning's defaults (progress bar on, on rank 0 only; the
    default callbacks), validation mid-epoch and at the end, `--test_after_fit`, and a callback
    that reads every metric on rank 0 alone at every hook (as rank-0-only callbacks do). A
    collective that runs on some ranks only hangs here; `--ddp_timeout` turns the hang into a
    failure within a minute instead of the process group's 30."""
    if ACCELERATOR != "cpu" and torch.cuda.device_count() < 2:
        pytest.skip("2-process DDP on the GPU needs 2 GPUs")
    args, meta = _arguments(composition, fake_root, steps=DDP_STEPS)
    args += ["--trainer.devices", "2", "--trainer.strategy", "ddp", "--ddp_timeout", "0:01:00",
             "--trainer.callbacks+=tests.ddp_probes.RankZeroMetricsReader"]
    if _trains(meta["model"]):
        result = run_cli("fit", *args, "--test_after_fit", "true", cwd=tmp_path, timeout=300)
    else:  # zero-shot trains nothing (and DDP wraps nothing): its 2-process runs are `validate` and `test`
        result = run_cli("validate", *args, cwd=tmp_path, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        result = run_cli("test", *args, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    _check_run(tmp_path, meta)
    if _takes_steps(meta["model"]):  # it ran what it was asked to: 4 steps, validated at steps 2 and 4
        events = _scalar_steps(tmp_path, meta, "val/rsum" if meta.get("retrieval") else "val/acc")
        assert events[:2] == [1, 3], events  # steps 2 and 4 (TensorBoard: the global step - 1); then --test_after_fit
