"""Benchmark the head-level engine against native open_clip, side by side in one run.

    python experiments/bench_heads.py --model ViT-B-16 --batch 8 --out docs/benchmarks.md

Rows (ratios of median step times, the cases interleaved):
- converted model, no control active, vs native: inference and a full training step;
- exported model (HA-LoRA + gates + zero ablation folded) vs native: inference;
- the per-head path in use (a `heads.tapping` scope) vs native: inference, for reference;
- head-aware LoRA training step (backbone frozen) vs plain LoRA, with trainable-parameter counts.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import open_clip
import torch
from bench_report import interleaved, section, update_section

import dg_heads.backbone  # noqa: F401
from dg_heads import heads


def hap_ranks(blocks: int) -> list[int]:
    """HAP's ranks: 8 in the last two blocks, 2 elsewhere."""
    return [2] * (blocks - 2) + [8, 8]


def train_step(model: torch.nn.Module, x: torch.Tensor, params: list[torch.nn.Parameter]):
    optimizer = torch.optim.AdamW(params, lr=1e-5)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model.encode_image(x).float().pow(2).mean().backward()
        optimizer.step()

    return step


def infer(model: torch.nn.Module, x: torch.Tensor):
    @torch.no_grad()
    def run() -> None:
        model.encode_image(x)

    return run


def infer_tapped(model: torch.nn.Module, x: torch.Tensor):
    """Inference with every head's output recorded (a `heads.tapping` scope per forward, as a loss opens)."""
    @torch.no_grad()
    def run() -> None:
        with heads.tapping(model):
            model.encode_image(x)

    return run


def lora_model(native: torch.nn.Module, head_aware: bool) -> tuple[torch.nn.Module, list]:
    model = heads.convert(copy.deepcopy(native))
    model.requires_grad_(False)
    heads.add_lora(model, ("q", "v"), hap_ranks(len(heads.head_attentions(model))), head_aware=head_aware)
    return model, [p for p in model.parameters() if p.requires_grad]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    torch.manual_seed(0)
    native = open_clip.create_model(args.model).to(args.device)
    size = dg_heads.backbone.image_size_of(native)
    x = torch.randn(args.batch, 3, size, size, device=args.device)

    converted = heads.convert(copy.deepcopy(native))
    tapped = heads.convert(copy.deepcopy(native))
    with_controls = heads.convert(copy.deepcopy(native))
    blocks = len(heads.head_attentions(with_controls))
    heads.add_lora(with_controls, ("q", "v"), hap_ranks(blocks))
    heads.add_gates(with_controls)
    heads.ablate(with_controls, {blocks - 1: [0]}, mode="zero")
    exported = heads.export(with_controls)
    for m in (native, converted, tapped, exported):
        m.eval()

    inference = interleaved({
        "native": infer(native, x), "converted": infer(converted, x),
        "exported": infer(exported, x), "tapped": infer_tapped(tapped, x),
    }, args.repeats)

    train_native, train_converted = copy.deepcopy(native).train(), heads.convert(copy.deepcopy(native)).train()
    training = interleaved({
        "native": train_step(train_native, x, list(train_native.visual.parameters())),
        "converted": train_step(train_converted, x, list(train_converted.visual.parameters())),
    }, args.repeats)

    ha_model, ha_params = lora_model(native, head_aware=True)
    plain_model, plain_params = lora_model(native, head_aware=False)
    lora = interleaved({
        "ha_lora": train_step(ha_model.train(), x, ha_params),
        "plain_lora": train_step(plain_model.train(), x, plain_params),
    }, args.repeats)

    count = lambda ps: sum(p.numel() for p in ps)  # noqa: E731
    ms = lambda s: f"{1000 * s:.1f}"  # noqa: E731
    rows = [
        ("inference: converted, no control / native", inference["converted"], inference["native"], "<= 1.05"),
        ("training step: converted, no control / native", training["converted"], training["native"], "<= 1.05"),
        ("inference: exported (HA-LoRA+gates+ablation folded) / native",
         inference["exported"], inference["native"], "<= 1.02"),
        ("inference: per-head path in use (taps on) / native", inference["tapped"], inference["native"], "(reference)"),
        ("training step, backbone frozen: HA-LoRA / plain LoRA", lora["ha_lora"], lora["plain_lora"], "(report)"),
    ]
    table = ["| comparison | ms | ms (reference) | ratio | target |", "|---|---|---|---|---|"]
    table += [f"| {name} | {ms(a)} | {ms(b)} | {a / b:.3f} | {target} |" for name, a, b, target in rows]
    body = section(
        f"Head-level engine ({args.model}, batch {args.batch}, {args.device}, fp32)",
        f"python experiments/bench_heads.py --model {args.model} --batch {args.batch} --repeats {args.repeats}",
        f"medians of {args.repeats} interleaved repeats (`make bench`).",
        [*table, "",
         f"Trainable parameters, LoRA on q and v, ranks {hap_ranks(blocks)}: head-aware "
         f"{count(ha_params):,}, plain {count(plain_params):,} "
         f"(image tower: {count(native.visual.parameters()):,})."],
    )
    print(body)
    if args.out:
        update_section(args.out, f"bench_heads_{args.device}", body)


if __name__ == "__main__":
    main()
