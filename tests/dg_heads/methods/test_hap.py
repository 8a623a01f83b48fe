"""Attention Head Purification: identity at init, MMD routing, checkpoints, resume, DDP, errors."""

import json
from pathlib import Path

import open_clip
import pytest
import torch

from dg_heads import heads
from dg_heads.backbone import CLIPSpec
from dg_heads.methods import GatingSpec, HeadPurification, LoRASpec
from tests.conftest import demo_configs, gpu_configs, make_benchmark, run_cli, run_main

HAP = demo_configs("hap")


def _hap(clip: CLIPSpec | None = None, **gating) -> HeadPurification:
    torch.manual_seed(0)
    module = HeadPurification(clip or CLIPSpec(), lora=LoRASpec(), gating=GatingSpec(**gating))
    module.classifier = torch.nn.Parameter(torch.randn(10, 64), requires_grad=False)
    module.configure_trainable()
    return module


def test_gates_and_lora_start_as_identity():
    module = _hap()
    torch.manual_seed(0)
    frozen = open_clip.create_model("dg-tiny-vit").eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert (module.clip.eval().encode_image(x) - frozen.encode_image(x)).abs().max() <= 1e-5
    assert torch.equal(heads.gate_values(module.clip), torch.ones(4, 4))
    assert heads.head_attentions(module.clip)[3].lora.rank == 8 and heads.head_attentions(module.clip)[0].lora.rank == 2


def test_only_lora_and_gates_train():
    trainable = {n for n, p in _hap().named_parameters() if p.requires_grad}
    assert trainable and all(".lora." in n or ".gate." in n for n in trainable)


def _mmd_grads(routing: str) -> dict[str, bool]:
    module = _hap(blocks=[3], mmd_routing=routing)
    for attn in heads.head_attentions(module.clip):  # B != 0 so LoRA's A gets gradients too
        torch.nn.init.normal_(attn.lora.factors["v_B"], std=0.1)
    images = torch.randn(8, 3, 32, 32)
    images[4:] += 1.0  # a shift between the two domains
    with heads.tapping(module.clip, module.gated_blocks) as taps:
        module.image_features(images)
    module.mmd_term(module.mmd_loss(taps, torch.arange(2).repeat_interleave(4))).backward()
    grad = lambda p: p.grad is not None and bool(p.grad.abs().sum() > 0)  # noqa: E731
    attn = heads.head_attentions(module.clip)
    return {"gate": grad(attn[3].gate.theta), "lora": any(grad(p) for a in attn for p in a.lora.parameters())}


@pytest.mark.parametrize("routing, expected", [
    ("gates", {"gate": True, "lora": False}),
    ("gates_local", {"gate": True, "lora": False}),
    ("lora", {"gate": False, "lora": True}),
    ("both", {"gate": True, "lora": True}),
])
def test_mmd_routing_decides_which_parameters_get_its_gradient(routing, expected):
    assert _mmd_grads(routing) == expected


def test_unknown_routing_and_nothing_to_train_are_refused():
    from dg_heads.errors import DGHeadsError

    routings = r"\('gates', 'lora', 'both', 'gates_local'\)"
    with pytest.raises(DGHeadsError, match=r"mmd_routing 'heads' is not one of " + routings):
        HeadPurification(gating=GatingSpec(mmd_routing="heads"))
    with pytest.raises(DGHeadsError, match="mmd_weight must be a finite number >= 0, got nan"):
        HeadPurification(gating=GatingSpec(mmd_weight=float("nan")))
    with pytest.raises(DGHeadsError, match="nothing to train"):
        HeadPurification(lora=LoRASpec(enabled=False), gating=GatingSpec(enabled=False))


def _keep_taps(module) -> dict[int, torch.Tensor]:
    """The CLS taps each `mmd_loss` call reads, kept for `_reference_mmd`."""
    kept, real = {}, module.mmd_loss

    def mmd_loss(taps, domains):
        kept.update({b: tap["cls"] for b, tap in taps.items()})
        return real(taps, domains)

    module.mmd_loss = mmd_loss
    return kept


def _reference_mmd(module, domains, gammas, taps, detach_outputs=False):
    """The HAP loss's MMD written out: per gated block, DomainBed's pairwise MMD of the gated CLS
    head features (`taps`: the last forward's, from `_keep_taps`), averaged over pairs, then over blocks."""
    def kernel(a, b):
        d = ((a[:, None] - b[None]) ** 2).sum(-1).clamp_min(1e-30)
        return sum(torch.exp(-g * d) for g in gammas)

    values = []
    for block, attn in enumerate(heads.head_attentions(module.clip)):
        outputs = taps[block].detach() if detach_outputs else taps[block]
        features = (outputs * attn.gate.values().view(1, -1, 1)).flatten(1)
        groups = [features[domains == d] for d in range(int(domains.max()) + 1)]
        pairs = [kernel(a, a).mean() + kernel(b, b).mean() - 2 * kernel(a, b).mean()
                 for i, a in enumerate(groups) for b in groups[i + 1:]]
        values.append(torch.stack(pairs).mean())
    return torch.stack(values).mean()


def _routing_case(routing: str, clip: CLIPSpec | None = None):
    """A HAP module with non-trivial LoRA B and gates, and a 3-domain batch with a domain shift."""
    module = _hap(clip, mmd_routing=routing, mmd_weight=0.7, mmd_gammas=[0.1, 1.0, 10.0])
    module.num_domains = 3
    for attn in heads.head_attentions(module.clip):
        torch.nn.init.normal_(attn.lora.factors["v_B"], std=0.1)  # B != 0: LoRA's A gets gradients too
        torch.nn.init.normal_(attn.lora.factors["q_B"], std=0.1)
        torch.nn.init.normal_(attn.gate.theta, std=0.3)
    torch.manual_seed(1)
    images, labels = torch.randn(9, 3, 32, 32), torch.randint(0, 10, (9,))
    domains = torch.arange(3).repeat_interleave(3)
    images[domains == 1] += 0.5
    return module, images, labels, domains


# Recorded from the code before `heads.tapping` (HAP's forward wrote `attn.tap`, its loss read it
# back), commit f25f451, with: for each routing, `module, images, labels, domains = _routing_case(routing)`;
# `loss, logs = module.training_loss(images, labels, domains)`; `loss.backward()`; print `float(loss)`,
# `float(logs["train/mmd"])` and `sum(p.grad.double().abs().sum())` over the trainable parameters
# (dg-tiny-vit, CPU; old and new were also compared with `torch.equal`: bit-identical). The loss
# must not change with how its head outputs reach it.
RECORDED = {  # routing: (loss, mmd, sum of |grad|)
    "gates": (6.364790439605713, 2.145455837249756, 46.89255858623437),
    "lora": (6.364790439605713, 2.145455837249756, 47.982289892764584),
    "both": (6.364790439605713, 2.145455837249756, 48.022436384277626),
    "gates_local": (6.364790439605713, 2.145455837249756, 46.87381584794275),
}


@pytest.mark.parametrize("routing", ["gates", "lora", "both", "gates_local"])
def test_the_loss_carries_exactly_the_routed_mmd_gradient(routing):
    """grad(loss) - grad(CE) equals w * grad(MMD) (torch.autograd.grad of an independent
    implementation) for the routed parameter group and is zero for the other group; the loss,
    its MMD and its gradients are those recorded before the tapping scope (`RECORDED`)."""
    module, images, labels, domains = _routing_case(routing)
    taps = _keep_taps(module)
    loss, logs = module.training_loss(images, labels, domains)
    attns = heads.head_attentions(module.clip)
    groups = {"gates": [a.gate.theta for a in attns], "lora": [p for a in attns for p in a.lora.parameters()]}
    params = groups["gates"] + groups["lora"]
    total = torch.autograd.grad(loss, params, retain_graph=True)
    assert len(params) == sum(p.requires_grad for p in module.parameters())  # every trainable tensor
    expected_loss, expected_mmd, expected_grads = RECORDED[routing]
    assert float(loss.detach()) == pytest.approx(expected_loss, rel=1e-6)
    assert float(logs["train/mmd"]) == pytest.approx(expected_mmd, rel=1e-6)
    assert sum(float(g.double().abs().sum()) for g in total) == pytest.approx(expected_grads, rel=1e-6)
    ce = torch.autograd.grad(logs["train/ce"], params, retain_graph=True, allow_unused=True)
    reference = _reference_mmd(module, domains, (0.1, 1.0, 10.0), taps, detach_outputs=routing == "gates_local")
    assert logs["train/mmd"].item() == pytest.approx(reference.item(), rel=1e-5)
    mmd = torch.autograd.grad(0.7 * reference, params, allow_unused=True)
    zero = torch.zeros(())
    routed = {"gates": {"gates"}, "lora": {"lora"}, "both": {"gates", "lora"},
              "gates_local": {"gates", "lora"}}[routing]
    offset = 0
    for name, group in groups.items():
        for i, p in enumerate(group):
            t, c, m = total[offset + i], ce[offset + i], mmd[offset + i]
            extra = t - (c if c is not None else zero)
            expected = (m if m is not None else torch.zeros_like(p)) if name in routed else torch.zeros_like(p)
            assert torch.allclose(extra, expected, rtol=1e-4, atol=1e-7), (routing, name, i)
        offset += len(group)
    if routing in ("gates", "both"):  # the full path: block 0's gate feels the later blocks' MMDs
        local = torch.autograd.grad(0.7 * _reference_mmd(module, domains, (0.1, 1.0, 10.0), taps, detach_outputs=True),
                                    groups["gates"][0])[0]
        assert not torch.allclose(local, total[0] - ce[0], rtol=1e-3)


def test_gating_without_lora_routes_to_the_gates_in_one_pass(monkeypatch):
    """With no LoRA the gates are all that train, so `gates` routing is the plain gradient of
    CE + w * MMD: no second gradient pass (the `gating_only` ablation row costs what `both` costs)."""
    torch.manual_seed(0)
    module = HeadPurification(CLIPSpec(), lora=LoRASpec(enabled=False),
                              gating=GatingSpec(mmd_weight=0.7, mmd_gammas=[0.1, 1.0, 10.0]))
    module.classifier = torch.nn.Parameter(torch.randn(10, 64), requires_grad=False)
    module.configure_trainable()
    module.num_domains = 3
    for attn in heads.head_attentions(module.clip):
        torch.nn.init.normal_(attn.gate.theta, std=0.3)
    torch.manual_seed(1)
    images, labels = torch.randn(9, 3, 32, 32), torch.randint(0, 10, (9,))
    domains = torch.arange(3).repeat_interleave(3)
    images[domains == 1] += 0.5
    gates = [a.gate.theta for a in heads.head_attentions(module.clip)]
    grad = torch.autograd.grad
    calls = []
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append(1) or grad(*a, **k))
    taps = _keep_taps(module)
    loss, logs = module.training_loss(images, labels, domains)
    assert calls == []  # no extra pass inside the loss
    total = grad(loss, gates, retain_graph=True)
    expected = grad(logs["train/ce"] + 0.7 * _reference_mmd(module, domains, (0.1, 1.0, 10.0), taps), gates)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(total, expected))


def _routing_grads(routing: str, **clip) -> tuple[list[torch.Tensor], HeadPurification]:
    module, images, labels, domains = _routing_case(routing, CLIPSpec(**clip))
    loss, _ = module.training_loss(images, labels, domains)
    loss.backward()
    return [p.grad for p in module.parameters() if p.requires_grad], module


@pytest.mark.parametrize("routing", ["gates", "lora", "both", "gates_local"])
def test_grad_checkpointing_gives_the_same_gradients_with_taps_gates_and_lora(routing):
    """`clip.grad_checkpointing: true` (open_clip's activation checkpointing): the recomputed
    blocks give every LoRA factor and gate the gradient of an ordinary step, for every MMD
    routing; the recomputation in the backward leaves no taps behind."""
    plain, _ = _routing_grads(routing)
    checkpointed, module = _routing_grads(routing, grad_checkpointing=True)
    assert module.clip.visual.transformer.grad_checkpointing
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-8) for a, b in zip(plain, checkpointed))
    assert all(attn.tap_sink is None for attn in heads.head_attentions(module.clip))  # nothing of the graph kept


def test_a_copy_and_an_export_work_after_a_grad_forward():
    """Taps sit in the autograd graph (non-leaf tensors, which `copy.deepcopy` refuses); they live
    in the loss's `heads.tapping` record, never on the module, so `copy.deepcopy` and
    `heads.export` work after any forward and after a training step."""
    import copy

    module, images, labels, domains = _routing_case("gates")
    module.image_features(images)  # a grad-enabled forward outside a loss
    assert not any(attn.tap_sink for attn in heads.head_attentions(module.clip))
    with heads.tapping(module.clip, [0, 3]) as taps:
        module.image_features(images)
        copied = copy.deepcopy(module)  # even inside a scope: the copy holds no sink
    assert sorted(taps) == [0, 3] and all(a.tap_sink is None for a in heads.head_attentions(copied.clip))
    exported = heads.export(module.clip)
    with torch.no_grad():
        assert torch.allclose(exported.encode_image(images), module.clip.encode_image(images), atol=1e-5)
    loss, _ = module.training_loss(images, labels, domains)
    loss.backward()
    assert not any(attn.tap_sink for attn in heads.head_attentions(module.clip))
    copy.deepcopy(module)
    heads.export(module.clip)


def test_a_second_forward_during_the_step_cannot_change_the_features_the_loss_reads():
    """A forward run while HAP's step is under way (here a hook on the image tower runs a second
    train forward of other images, as a second view for a consistency term might) used to
    overwrite the taps its loss then read: the MMD silently came from the other images. Now it is
    refused, and an eval forward between the train forward and the loss changes nothing."""
    module, images, labels, domains = _routing_case("gates")
    other = torch.randn_like(images)

    def second_forward(tower, args, output):
        if not getattr(tower, "_inner", False):
            tower._inner = True
            tower(other)
            tower._inner = False

    handle = module.clip.visual.register_forward_hook(second_forward)
    with pytest.raises(RuntimeError, match="tapped twice in one `heads.tapping` scope"):
        module.training_loss(images, labels, domains)
    handle.remove()
    assert not any(attn.tap_sink for attn in heads.head_attentions(module.clip))  # the scope closed
    with heads.tapping(module.clip, module.gated_blocks) as taps:
        module(images)
    with torch.no_grad():
        module.eval()(other)  # an eval forward between the train forward and the loss
    module.train()
    assert module.mmd_loss(taps, domains).item() == pytest.approx(RECORDED["gates"][1], rel=1e-6)  # this batch's


# ---------------------------------------------------------------- through the CLI
RUN = ["--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "1", "--trainer.log_every_n_steps", "1",
       "--data.init_args.num_workers", "0"]


def _state(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.slow
def test_hap_fit_logs_gates_and_saves_small_checkpoints(data_root, tmp_path):
    result = run_cli("fit", *HAP, *RUN, "--trainer.max_epochs", "1", "--test_after_fit", "true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs/rotated_digits/hap/version_0"
    gates = json.loads((run / "gates.json").read_text())
    assert len(gates) == 4 and all(abs(sum(v) - 4) < 1e-4 for v in gates.values())
    assert (run / "gates.csv").read_text().startswith("block,head_0")
    state = _state(run / "checkpoints/last.ckpt")
    assert all(".lora." in k or ".gate." in k or k == "classifier" for k in state)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run)).Reload()
    assert "gates" in events.Tags()["images"]
    assert {"train/ce", "train/mmd", "train/loss", "val/acc", "val/acc/0"} <= set(events.Tags()["scalars"])
    export = run_cli("export", str(run / "checkpoints/last.ckpt"), "--out", str(tmp_path / "hap.pt"), cwd=tmp_path)
    assert export.returncode == 0, export.stderr[-2000:]
    plain = open_clip.create_model("dg-tiny-vit", pretrained=str(tmp_path / "hap.pt"))
    assert all(type(b.attn) is torch.nn.MultiheadAttention for b in plain.visual.transformer.resblocks)


@pytest.mark.slow
def test_grad_checkpointing_through_the_cli_trains_the_same_weights(data_root, tmp_path):
    """`--model.init_args.clip.grad_checkpointing true`: the same run, the same trained tensors."""
    common = ["fit", *HAP, *RUN, "--trainer.max_steps", "3", "--trainer.limit_val_batches", "0"]
    plain = run_cli(*common, "--trainer.logger.init_args.version", "plain", cwd=tmp_path)
    checkpointed = run_cli(*common, "--trainer.logger.init_args.version", "ckpt",
                           "--model.init_args.clip.grad_checkpointing", "true", cwd=tmp_path)
    assert plain.returncode == 0 and checkpointed.returncode == 0, (plain.stderr + checkpointed.stderr)[-3000:]
    runs = tmp_path / "runs/rotated_digits/hap"
    a, b = _state(runs / "plain/checkpoints/last.ckpt"), _state(runs / "ckpt/checkpoints/last.ckpt")
    assert a.keys() == b.keys() and any(".gate." in k for k in a)
    assert all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in a)


@pytest.mark.slow
def test_resume_from_checkpoint_equals_an_uninterrupted_run(data_root, tmp_path):
    common = ["fit", *HAP, *RUN]
    full = run_cli(*common, "--trainer.max_epochs", "2", "--trainer.logger.init_args.version", "full", cwd=tmp_path)
    first = run_cli(*common, "--trainer.max_epochs", "1", "--trainer.logger.init_args.version", "split", cwd=tmp_path)
    assert full.returncode == 0 and first.returncode == 0, (full.stderr + first.stderr)[-3000:]
    runs = tmp_path / "runs/rotated_digits/hap"
    resumed = run_cli(*common, "--trainer.max_epochs", "2", "--trainer.logger.init_args.version", "split",
                      "--ckpt_path", str(runs / "split/checkpoints/last.ckpt"), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = _state(runs / "full/checkpoints/last.ckpt"), _state(runs / "split/checkpoints/last.ckpt")
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    ckpt_a = torch.load(runs / "full/checkpoints/last.ckpt", weights_only=False)
    ckpt_b = torch.load(runs / "split/checkpoints/last.ckpt", weights_only=False)
    assert ckpt_a["global_step"] == ckpt_b["global_step"] == 8


@pytest.mark.slow
def test_two_process_ddp_with_bf16_mixed_trains(data_root, tmp_path):
    from tests.slurm_cluster import why_unavailable

    if why_unavailable() is None:  # the same run goes through `srun` there; CI time is spent once
        pytest.skip("SLURM is here: tests/cli/test_slurm.py::test_two_task_srun_runs_hap_ddp_bf16 runs this under srun")
    result = run_cli("fit", *HAP, *RUN, "--trainer.max_epochs", "1", "--trainer.devices", "2",
                     "--trainer.strategy", "ddp", "--trainer.precision", "bf16-mixed", "--test_after_fit", "true",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "runs/rotated_digits/hap/version_0/metrics_test.json").read_text())
    assert 0.0 <= metrics["test/acc/75"] <= 1.0 and metrics["global_step"] == 4
    # exact evaluation over 2 ranks: 1,797 test images, none repeated by padding (1,798) or dropped
    assert metrics["test/n/75"] == 1797


@pytest.mark.slow
@pytest.mark.parametrize("case", ["batch", "one_source"])
def test_mmd_preconditions_fail_at_start(case, data_root, tmp_path):
    args = ["fit", *HAP, *RUN]
    if case == "batch":
        args += ["--data.init_args.batch_size_per_domain", "1"]
        expected = "batch_size_per_domain is 1; the MMD needs at least 2"
    else:
        make_benchmark(tmp_path, "pacs", per_class=2, size=4)
        args += ["--data.init_args.dataset", "pacs", "--data.init_args.root", str(tmp_path),
                 "--data.init_args.test_domains", "[art_painting,cartoon,sketch]",
                 "--data.init_args.batch_size_per_domain", "2"]
        expected = "the MMD needs at least 2 source domains; the data has ['photo']"
    result = run_main(*args, cwd=tmp_path)
    assert result.returncode == 2 and expected in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(data_root, tmp_path):
    result = run_cli("fit", *HAP, *RUN, "--trainer.max_epochs", "2", "--trainer.logger.init_args.version", "v",
                     "--trainer.callbacks+=tests.poison.PoisonAtStep", "--trainer.callbacks.step=6", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    last = tmp_path / "runs/rotated_digits/hap/v/checkpoints/last.ckpt"
    assert "loss is not finite (nan) at global step 6" in result.stderr and str(last) in result.stderr
    assert "Traceback" not in result.stderr
    checkpoint = torch.load(last, weights_only=False)  # the epoch-0 state: finite, step 4
    assert checkpoint["global_step"] == 4 and all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())


@pytest.mark.slow
def test_vit_b16_checkpoint_holds_only_trained_tensors_under_10_mb(tmp_path):
    make_benchmark(tmp_path, "pacs", per_class=1, size=224)
    result = run_cli(
        "fit", *gpu_configs("pacs", "hap"), "--data.init_args.test_domains", "[photo]",
        "--data.init_args.root", str(tmp_path), "--model.init_args.clip.pretrained", "null",
        "--trainer.accelerator", "cpu", "--trainer.precision", "32-true", "--trainer.max_steps", "1",
        "--trainer.limit_val_batches", "1", "--trainer.val_check_interval", "1",
        "--data.init_args.batch_size_per_domain", "2", "--data.init_args.eval_batch_size", "2",
        "--data.init_args.num_workers", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = tmp_path / "runs/pacs/hap/version_0/checkpoints/last.ckpt"
    size_mb = ckpt.stat().st_size / 2**20
    assert size_mb <= 10, size_mb
    checkpoint = torch.load(ckpt, weights_only=False)
    assert checkpoint["optimizer_states"] and len(checkpoint["state_dict"]) == 12 * 4 + 12 + 1


@pytest.mark.slow
def test_fp16_mixed_with_a_two_pass_routing_is_refused_at_start(data_root, tmp_path):
    """fp16 mixed precision (a GradScaler: V100 clusters) with `gates` routing: the MMD's own
    gradient pass is not loss-scaled, so it is refused in one line before training. (On a CPU
    Lightning turns `--trainer.precision 16-mixed` into bf16-mixed; the plugin itself, with its
    GradScaler, is what a GPU run gets.)"""
    result = run_main("fit", *HAP, *RUN, "--trainer.max_steps", "1",
                      "--trainer.plugins+=lightning.pytorch.plugins.MixedPrecision",
                      "--trainer.plugins.precision=16-mixed", "--trainer.plugins.device=cpu", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "error: gating.mmd_routing 'gates' takes the MMD's gradient in a backward pass of its own" in result.stderr
    assert "trainer.precision '16-mixed'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs/rotated_digits/hap/version_0/checkpoints").exists()


@pytest.mark.slow
def test_gates_files_hold_the_gates_of_the_checkpoint_that_test_after_fit_tests(data_root, tmp_path):
    """Validations at steps 3 and 6; the first is selected (val/acc no higher at step 6: a tie
    keeps the first), `last.ckpt` holds step 6's: `gates.json` / `gates.csv` hold the selected
    checkpoint's gates (H * softmax(theta) of its saved theta), not the final ones."""
    result = run_cli("fit", *HAP, *RUN[2:], "--trainer.limit_train_batches", "6", "--trainer.val_check_interval", "3",
                     "--trainer.limit_val_batches", "1", "--trainer.max_epochs", "1", "--test_after_fit", "true",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs/rotated_digits/hap/version_0"
    [best] = (run / "checkpoints").glob("best-*.ckpt")
    assert best.name == "best-step=3.ckpt"

    def gates_of(ckpt: Path) -> list[list[float]]:
        state = _state(ckpt)
        return [(4 * torch.softmax(state[f"clip.visual.transformer.resblocks.{b}.attn.gate.theta"], 0)).tolist()
                for b in range(4)]

    assert torch.load(run / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 6
    selected, final = gates_of(best), gates_of(run / "checkpoints/last.ckpt")
    assert max(abs(a - b) for s, f in zip(selected, final) for a, b in zip(s, f)) > 1e-5  # training moved them
    flat = [v for row in selected for v in row]
    written = json.loads((run / "gates.json").read_text())
    assert [v for b in range(4) for v in written[str(b)]] == pytest.approx(flat, abs=1e-6)
    rows = (run / "gates.csv").read_text().splitlines()[1:]
    assert [float(v) for row in rows for v in row.split(",")[1:]] == pytest.approx(flat, abs=1e-6)
