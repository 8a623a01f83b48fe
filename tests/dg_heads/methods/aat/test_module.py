"""The Attention Ablation module: BP learning and the checkpoint it reports, the test domain never
read by the search, a search through the CLI and under DDP, the mask a checkpoint stores, and clear
errors. The search components (scorer, scan, GA) have their own files beside this one."""

import json
import re

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from dg_heads import heads
from dg_heads.errors import DGHeadsError
from dg_heads.heads import HeadMask
from dg_heads.methods import AttentionAblation
from dg_heads.selection import evaluate_selected_checkpoint
from tests.conftest import demo_configs, run_cli, run_main

RUN = ["--data.init_args.num_workers", "0",
       "--data.init_args.eval_batch_size", "32", "--model.init_args.search.ga.population", "4",
       "--model.init_args.search.ga.generations", "2"]


@pytest.fixture(scope="module")
def finetuned(data_root, tmp_path_factory):
    """The demo's fine-tuned tiny CLIP after 30 batches: a model with heads worth ablating."""
    folder = tmp_path_factory.mktemp("finetune")
    tuned = run_cli("fit", *demo_configs("finetune"),
                    "--data.init_args.num_workers", "0", "--trainer.max_epochs", "1",
                    "--trainer.limit_train_batches", "30", "--trainer.limit_val_batches", "1", cwd=folder)
    assert tuned.returncode == 0, tuned.stderr[-2000:]
    return folder / "runs/rotated_digits/finetune/version_0/checkpoints/last.ckpt"


def _said(result) -> tuple[list[str], list[str]]:
    """The search's own lines: (stdout lines from `dg-heads: AAT`/`dg-heads: source`, stderr `warning:` lines)."""
    said = [line for line in result.stdout.splitlines() if line.startswith(("dg-heads: AAT", "dg-heads: source"))]
    warned = [line for line in result.stderr.splitlines() if line.startswith("warning: AAT")]
    return said, warned


def test_mask_naming_a_missing_head_or_block_fails_at_start(tmp_path):
    bad = tmp_path / "ablation.json"
    bad.write_text(json.dumps({"2": [7]}))
    with pytest.raises(DGHeadsError, match=r"head 7 of block 2 does not exist: heads are 0\.\.3"):
        AttentionAblation(mask=str(bad))
    bad.write_text(json.dumps({"9": [0]}))
    with pytest.raises(DGHeadsError, match=r"block 9 does not exist"):
        AttentionAblation(mask=str(bad))
    with pytest.raises(DGHeadsError, match="does not exist"):
        AttentionAblation(mask=str(tmp_path / "missing.json"))


@pytest.mark.slow
def test_search_never_reads_the_test_domain(data_root, tmp_path):
    """Every image of the held-out domain is unreadable and `bad_images: error` is set: a search
    that touched one would fail."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(data_root / "RotatedDigits", root / "RotatedDigits")
    for image in (root / "RotatedDigits" / "75").rglob("*.png"):
        image.write_bytes(b"unreadable")
    for strategy in ("scan", "ga"):
        result = run_cli("fit", *demo_configs(f"aat_{strategy}"), *RUN, "--data.init_args.root", str(root),
                         "--model.init_args.search.max_scoring_batches", "1", "--data.init_args.bad_images", "error",
                         cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
    tested = run_cli("test", *demo_configs("aat_scan"), *RUN, "--data.init_args.root", str(root),
                     "--data.init_args.bad_images", "error", cwd=tmp_path)
    assert tested.returncode == 2 and "cannot read image" in tested.stderr  # the guard is real


@pytest.mark.slow
def test_scan_through_the_cli_writes_the_importance_map_mask_and_checkpoint(data_root, tmp_path):
    result = run_cli("fit", *demo_configs("aat_scan"), *RUN, "--test_after_fit", "true",
                     "--model.init_args.search.max_scoring_batches", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    run = tmp_path / "runs/rotated_digits/aat_scan/version_0"
    importance = json.loads((run / "head_importance.json").read_text())
    assert len(importance) == 4 and all(len(v) == 4 for v in importance.values())
    assert json.loads((run / "search_cost.json").read_text())["cost_full_passes"] == pytest.approx(1 + 4 * 5 / 2)
    assert json.loads((run / "ablation.json").read_text()) == {}
    # the random-init tiny CLIP scores every mask at chance: one warning line says so, nothing else
    said, warned = _said(result)
    assert said == [] and len(warned) == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert re.fullmatch(r"warning: AAT scan: all 17 head masks scored give the same source validation accuracy "
                        r"\(0\.\d{4}\): this model has nothing to ablate .*; nothing is ablated", warned[0])
    assert "test/acc/75" in json.loads((run / "metrics_test.json").read_text())
    checkpoint = torch.load(run / "checkpoints/last.ckpt", weights_only=False)
    assert "ablation" in checkpoint["dg_heads"]
    ckpt = str(run / "checkpoints/last.ckpt")
    tested = run_cli("test", *demo_configs("aat_scan"), *RUN, "--ckpt_path", ckpt, cwd=tmp_path)
    assert tested.returncode == 0, tested.stderr[-2000:]  # `lightning test` on the search's checkpoint
    exported = run_cli("export", ckpt, "--out", str(tmp_path / "aat.pt"), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr[-2000:]  # zero ablation folds: a plain open_clip file


@pytest.mark.slow
def test_bp_coefficients_move_and_the_binarised_mask_is_applied_at_test(data_root, tmp_path):
    result = run_cli("fit", *demo_configs("aat_bp"), *RUN, "--test_after_fit", "true",
                     "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "6",
                     "--trainer.limit_val_batches", "1", "--model.init_args.search.bp_binarize", "topk",
                     "--model.init_args.search.bp_top_k", "3", "--model.init_args.optim.lr", "5.0e-2",
                     "--model.init_args.optim.warmup_steps", "0",
                     cwd=tmp_path)  # the demo preset's 1e-3 is for fine-tuning
    assert result.returncode == 0, result.stderr[-2000:]
    run = tmp_path / "runs/rotated_digits/aat_bp/version_0"
    strengths = torch.tensor(list(json.loads((run / "bp_strength.json").read_text()).values()))
    assert (strengths - 0.05).abs().max() > 1e-3  # moved away from the initial strength
    mask = json.loads((run / "ablation.json").read_text())
    assert sum(len(v) for v in mask.values()) == 3
    from dg_heads.export_cli import load_module

    module = load_module(run / "checkpoints/last.ckpt")  # rebuilds the seeded random-init backbone
    assert heads.ablation_mask(module.clip) == HeadMask.from_dict(mask)


class StrengthsMoveOnAfterTheFirstValidation(Callback):
    """Negates the ablation logits when the second epoch starts: training goes on after the
    selected checkpoint and ends with other strengths (here: the opposite ranking)."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:
            with torch.no_grad():
                pl_module.ablation_logits.neg_()


def _top_k_mask(logits: torch.Tensor, k: int) -> dict[str, list[int]]:
    """`{"block": [heads]}` of the k highest sigmoid(logits), as ablation.json writes it."""
    chosen = torch.topk(torch.sigmoid(logits).flatten(), k).indices.tolist()
    per_block: dict[str, list[int]] = {}
    for index in sorted(chosen):
        block, head = divmod(index, logits.shape[1])
        per_block.setdefault(str(block), []).append(head)
    return per_block


def test_bp_reports_and_keeps_the_mask_of_the_checkpoint_validation_selected(bp_in_process, tmp_path, capsys):
    """BP's result is the selected checkpoint's (the first validation's here), not the last
    step's: the printed mask, ablation.json, bp_strength, last.ckpt and the model that
    `evaluate_selected_checkpoint` tests all hold that checkpoint's strengths and mask."""
    model, data = bp_in_process
    selection = ModelCheckpoint(dirpath=tmp_path / "selected", monitor="step", mode="min")  # the first validation
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=2, limit_train_batches=2, limit_val_batches=1,
                        # (bar off: an in-process unit test of hooks, its output unread; every CLI test runs with it on)
                        limit_test_batches=1, num_sanity_val_steps=0, enable_progress_bar=False,
                        enable_model_summary=False, logger=TensorBoardLogger(tmp_path, name="run"),
                        callbacks=[selection, StrengthsMoveOnAfterTheFirstValidation()])
    trainer.fit(model, datamodule=data)
    final_logits = trainer.strategy.load_checkpoint(tmp_path / "run/version_0/checkpoints/last.ckpt")
    # our own file; weights_only=False: torch < 2.4 (the floor) cannot allow the spec classes
    selected = torch.load(selection.best_model_path, map_location="cpu", weights_only=False)
    assert selected["global_step"] == 2, selection.best_model_path
    expected = _top_k_mask(selected["state_dict"]["ablation_logits"], 3)
    assert expected != _top_k_mask(-selected["state_dict"]["ablation_logits"], 3)  # the test can tell them apart

    run = tmp_path / "run/version_0"
    assert json.loads((run / "ablation.json").read_text()) == expected
    strengths = torch.tensor(list(json.loads((run / "bp_strength.json").read_text()).values()))
    torch.testing.assert_close(strengths, torch.sigmoid(selected["state_dict"]["ablation_logits"]))
    out = capsys.readouterr()  # the random-init backbone: every mask may score the same (a `warning:` line)
    (line,) = [line for line in (out.out + out.err).splitlines() if "AAT bp" in line]
    said = re.fullmatch(r"(dg-heads|warning): AAT bp \(the checkpoint selected by step: epoch 0, step 2\)"
                        r"(?: ablates 3 heads|: .* ablated anyway): (block .*)", line)
    assert said, line
    printed = {block: [int(h) for h in heads_.split(", ")]
               for block, heads_ in re.findall(r"block (\d+): heads? ([\d, ]+)", said.group(2))}
    assert printed == expected
    torch.testing.assert_close(final_logits["state_dict"]["ablation_logits"], selected["state_dict"]["ablation_logits"])
    assert final_logits["dg_heads"]["ablation"] == expected

    evaluate_selected_checkpoint(trainer, model, data)  # --test_after_fit: the same mask is tested
    assert heads.ablation_mask(model.clip) == HeadMask.from_dict(expected)


@pytest.mark.slow
def test_a_search_from_a_trained_model_says_what_it_chose(finetuned, tmp_path):
    """The GA from the fine-tuned start (seeded: the same every run) finds a mask that scores higher
    than no mask (here one head), and says so: the heads it ablates (those of ablation.json) and the
    source-validation accuracy without and with them. (The other outcome, no mask improving, is
    said as `SearchOutcome.lines` writes it: test_report.py.)"""
    result = run_cli("fit", *demo_configs("aat_ga"), *RUN, "--model.init_args.init_checkpoint",
                     str(finetuned), "--model.init_args.search.max_scoring_batches", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    run = tmp_path / "runs/rotated_digits/aat_ga/version_0"
    mask = HeadMask.read(run / "ablation.json")
    said, warned = _said(result)
    assert warned == [], warned  # the fine-tuned model's masks do not all score the same
    history = (run / "ga_history.csv").read_text().splitlines()
    best_seen = max(float(line.split(",")[1]) for line in history[1:])
    assert mask, said  # a trained model has a head worth ablating
    first, second = said
    assert first == f"dg-heads: AAT ga ablates {len(mask)} head{'s' if len(mask) > 1 else ''}: {mask.describe()}"
    without, with_mask = map(float, re.fullmatch(
        r"dg-heads: source validation accuracy (0\.\d{4}) without the mask, (0\.\d{4}) with it "
        r"\(\d+ masks scored\)",
        second).groups())
    assert with_mask > without and with_mask >= round(best_seen, 4)


@pytest.mark.slow
def test_scan_under_two_process_ddp_equals_one_process(finetuned, tmp_path):
    """Each process caches its share of the scoring images and every mask's counts are summed
    over the processes: 2-process DDP finds the same head importance and mask as 1 process,
    and says what it chose once (rank 0); here with a cache budget that keeps block 0's inputs
    only, while the one process caches every block's. A budget too small for block 0 is one
    `error:` line (rank 0's; the other process ends quietly), exit 2."""
    start = finetuned  # a model with heads worth ablating
    said = {}
    runs = {}
    for devices, strategy, budget in (("1", "auto", "4"), ("2", "ddp", "0.005")):  # 0.005: block 0's only (4 MB)
        result = run_cli("fit", *demo_configs("aat_scan"), *RUN, "--model.init_args.init_checkpoint",
                         str(start), "--model.init_args.search.max_scoring_batches", "3",
                         "--model.init_args.search.cache_budget_gb", budget,
                         "--trainer.devices", devices, "--trainer.strategy", strategy, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[devices] = sorted((tmp_path / "runs/rotated_digits/aat_scan").iterdir())[-1]
        said[devices] = _said(result)
    files = ("head_importance.json", "ablation.json", "search_cost.json")
    read = {d: {f: json.loads((run / f).read_text()) for f in files} for d, run in runs.items()}
    one, two = read["1"], read["2"]
    assert any(v != 0 for row in one["head_importance.json"].values() for v in row)  # not trivially equal
    assert two["head_importance.json"] == one["head_importance.json"]
    assert two["ablation.json"] == one["ablation.json"]
    assert one["search_cost.json"]["scoring_images"] == two["search_cost.json"]["scoring_images"] == 5 * 3 * 32
    assert (one["search_cost.json"]["processes"], two["search_cost.json"]["processes"]) == (1, 2)
    assert (one["search_cost.json"]["cache_blocks_kept"], two["search_cost.json"]["cache_blocks_kept"]) == \
        ([0, 1, 2, 3, 4], [0])  # each process: 240 images x 65 x 64 x 4 bytes = 4 MB a block
    assert said["2"] == said["1"] and said["1"][0] and len(said["1"][0]) <= 2  # the same lines, printed once
    refused = run_cli("fit", *demo_configs("aat_scan"), *RUN, "--model.init_args.init_checkpoint", str(start),
                      "--model.init_args.search.max_scoring_batches", "3",
                      "--model.init_args.search.cache_budget_gb", "1e-6", "--trainer.devices", "2",
                      "--trainer.strategy", "ddp", cwd=tmp_path)
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.returncode == 2 and len(errors) == 1, refused.stderr[-3000:]
    assert "block 0's input for 240 scoring images" in errors[0]  # the larger process share (both: 240)


def test_a_checkpoint_stores_the_mask_as_every_version_wrote_it():
    """`{"block": [heads]}` with string keys: old checkpoints load, new ones are read by old code."""
    module = AttentionAblation()
    module.on_load_checkpoint({"state_dict": {}, "dg_heads": {"ablation": {"2": [3, 1]}}})
    assert module.mask == HeadMask.from_pairs([(2, 1), (2, 3)]) == heads.ablation_mask(module.clip)
    saved = {"state_dict": {}}
    module.on_save_checkpoint(saved)
    assert saved["dg_heads"]["ablation"] == {"2": [1, 3]}
    with pytest.raises(DGHeadsError, match=r"head 9 of block 0 does not exist"):
        module.on_load_checkpoint({"state_dict": {}, "dg_heads": {"ablation": {"0": [9]}}})


def test_a_cache_budget_too_small_for_block_0_is_one_error_line_before_any_work(data_root, tmp_path):
    """5 source domains x 1 batch of 32 images x 65 tokens x 64 float32 = 2.66 MB for block 0's
    inputs alone (13.3 MB for every block's) against a 1 kB budget: one line naming the sizes and
    the keys, exit 2, before a scoring image is cached (no run file of a search)."""
    result = run_main("fit", *demo_configs("aat_scan"), *RUN, "--model.init_args.search.max_scoring_batches", "1",
                      "--model.init_args.search.cache_budget_gb", "1e-6", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [result.stderr.strip().splitlines()[-1]] and len(errors) == 1, result.stderr[-2000:]
    assert errors[0] == (
        "error: model.init_args.search.cache_budget_gb: the AAT search's cache needs at least 0.00266 GB a "
        "process (block 0's input for 160 scoring images of 65 tokens x 64 float32; every block's: 0.0133 GB) "
        "but may use 1e-06 GB (cache_budget_gb: 1e-06): raise model.init_args.search.cache_budget_gb, or lower "
        "model.init_args.search.max_scoring_batches (1) or data.init_args.eval_batch_size (32), or use more "
        "processes")
    assert not list(tmp_path.rglob("ablation.json")) and not list(tmp_path.rglob("search_cost.json"))


@pytest.mark.slow
def test_bp_with_a_given_mask_trains_nothing_and_tests_that_mask_as_scan_does(data_root, tmp_path):
    """`search.strategy: bp` with `mask:` crashed at the first training step (no strengths to
    train). A given mask means no search: bp ends fit at once, as scan does, and `--test_after_fit`
    tests the model with that mask: the same test accuracies as scan with the same mask."""
    given = tmp_path / "given.json"
    given.write_text(json.dumps({"0": [1, 2], "2": [0, 1, 2, 3], "3": [3]}))
    tested = {}
    for strategy in ("bp", "scan"):
        result = run_cli("fit", *demo_configs(f"aat_{strategy}"), *RUN, "--test_after_fit", "true",
                         "--model.init_args.mask", str(given), "--trainer.limit_test_batches", "2", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        run = tmp_path / f"runs/rotated_digits/aat_{strategy}/version_0"
        tested[strategy] = json.loads((run / "metrics_test.json").read_text())
    assert tested["bp"] == tested["scan"] and "test/acc/75" in tested["bp"]


@pytest.mark.slow
def test_scan_with_a_tiny_cache_budget_equals_the_unbounded_one(finetuned, tmp_path):
    """From the fine-tuned model (masks change scores): a budget that keeps block 0's input only
    (every mask recomputes the blocks before its first ablated one) gives the same head-importance
    map, mask and lines as a budget that caches every block."""
    runs, said = {}, {}
    for budget in ("1000", "0.003"):  # 160 images x 65 x 64 x 4 bytes = 2.66 MB a block
        result = run_cli("fit", *demo_configs("aat_scan"), *RUN, "--model.init_args.init_checkpoint", str(finetuned),
                         "--model.init_args.search.max_scoring_batches", "1",
                         "--model.init_args.search.cache_budget_gb", budget, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        runs[budget] = sorted((tmp_path / "runs/rotated_digits/aat_scan").iterdir())[-1]
        said[budget] = _said(result)
    read = {b: {f: json.loads((run / f).read_text()) for f in ("head_importance.json", "ablation.json",
                                                                 "search_cost.json")} for b, run in runs.items()}
    full, small = read["1000"], read["0.003"]
    assert full["search_cost.json"]["cache_blocks_kept"] == [0, 1, 2, 3, 4]
    assert small["search_cost.json"]["cache_blocks_kept"] == [0]
    assert small["search_cost.json"]["cache_bytes_per_process"] == 160 * 65 * 64 * 4
    assert any(v != 0 for row in full["head_importance.json"].values() for v in row)  # not trivially equal
    assert small["head_importance.json"] == full["head_importance.json"]
    assert small["ablation.json"] == full["ablation.json"] and said["0.003"] == said["1000"]


@pytest.mark.slow
def test_a_checkpoint_from_a_relative_init_checkpoint_exports_from_another_folder(finetuned, tmp_path):
    """`init_checkpoint` given relative to the run's folder, then moved away: `dg-heads export` of
    the AAT checkpoint from another folder works, and its weights are the fine-tuned model's (the
    backbone tensors that init_checkpoint changed are in the AAT checkpoint itself)."""
    import shutil

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir(), elsewhere.mkdir()
    shutil.copy(finetuned, work / "start.ckpt")
    result = run_cli("fit", *demo_configs("aat_scan"), *RUN, "--model.init_args.init_checkpoint", "start.ckpt",
                     "--model.init_args.search.max_scoring_batches", "1", cwd=work)
    assert result.returncode == 0, result.stderr[-2000:]
    (work / "start.ckpt").rename(tmp_path / "moved.ckpt")
    ckpt = work / "runs/rotated_digits/aat_scan/version_0/checkpoints/last.ckpt"
    exported = run_cli("export", str(ckpt), "--out", "aat.pt", cwd=elsewhere)
    assert exported.returncode == 0, exported.stderr[-2000:]
    reference = run_cli("export", str(tmp_path / "moved.ckpt"), "--out", "finetuned.pt", cwd=elsewhere)
    assert reference.returncode == 0, reference.stderr[-2000:]
    ours, theirs = (torch.load(elsewhere / name, weights_only=True) for name in ("aat.pt", "finetuned.pt"))
    untouched = [k for k in theirs if k.startswith("visual.") and ".attn." not in k]  # ablation folds into attn only
    assert len(untouched) > 10 and all(torch.equal(ours[k], theirs[k]) for k in untouched)
    tested = run_cli("test", *demo_configs("aat_scan"), *RUN, "--ckpt_path", str(ckpt), cwd=elsewhere)
    assert tested.returncode == 0, tested.stderr[-2000:]  # `lightning test` of it from there too


def test_the_init_weights_a_checkpoint_holds_survive_a_reload_and_a_second_save():
    """A module rebuilt from the checkpoint (hparams `init_checkpoint: null`, as a resumed bp run or
    `lightning test` build it) gets the backbone tensors back and stores them in its own checkpoints."""
    torch.manual_seed(0)
    first = AttentionAblation()
    with torch.no_grad():
        first.clip.visual.conv1.weight.add_(1.0)  # what folding an init_checkpoint changed
    first.init_keys, first.init_checkpoint = ["visual.conv1.weight"], "/somewhere/start.ckpt"
    saved = {"state_dict": {}, "hyper_parameters": {"init_checkpoint": "start.ckpt", "mask": None}}
    first.on_save_checkpoint(saved)
    assert saved["hyper_parameters"] == {"init_checkpoint": None, "mask": None}
    assert saved["dg_heads"]["init_checkpoint"] == "/somewhere/start.ckpt"
    torch.manual_seed(0)
    second = AttentionAblation()
    assert not torch.equal(second.clip.visual.conv1.weight, first.clip.visual.conv1.weight)
    second.on_load_checkpoint(saved)  # the frozen-backbone fingerprint agrees only with the tensor restored
    assert torch.equal(second.clip.visual.conv1.weight, first.clip.visual.conv1.weight)
    again = {"state_dict": {}}
    second.on_save_checkpoint(again)
    assert torch.equal(again["dg_heads"]["init_weights"]["visual.conv1.weight"], first.clip.visual.conv1.weight)


@pytest.mark.slow
def test_an_init_checkpoint_that_trained_on_the_test_domain_is_flagged_before_any_work(finetuned, tmp_path):
    """The fine-tuned model held out 75 and trained on 0: an AAT run that tests on 0 from it is no
    domain generalisation. `--strict true`: one error line, before the search (without: a warning)."""
    result = run_cli("fit", *demo_configs("aat_scan"), *RUN, "--model.init_args.init_checkpoint", str(finetuned),
                     "--data.init_args.test_domains", "[0]", "--strict", "true", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "test_domains ['0']" in errors[0] and "trained on this domain" in errors[0], errors
    assert not list(tmp_path.rglob("head_importance*")) and not list(tmp_path.rglob("*.ckpt"))


def test_scoring_images_are_shared_out_even_when_a_process_gets_none():
    """Fewer scoring images than processes (1 image, 2 processes: `max_scoring_batches 1` x
    `eval_batch_size 1`): the other process scores nothing and still joins the gathers; Lightning's
    `UnrepeatedDistributedSampler` refuses such a process (an AssertionError that hung the fit)."""
    from types import SimpleNamespace

    from torch.utils.data import DataLoader

    from dg_heads.methods.aat.module import _first_images

    loader = DataLoader(list(range(10)), batch_size=1)
    shares = [[int(b) for b in _first_images(loader, 3, SimpleNamespace(world_size=2, global_rank=rank))]
              for rank in range(2)]
    assert shares == [[0, 2], [1]]
    shares = [[int(b) for b in _first_images(loader, 1, SimpleNamespace(world_size=2, global_rank=rank))]
              for rank in range(2)]
    assert shares == [[0], []]
