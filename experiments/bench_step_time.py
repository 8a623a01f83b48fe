"""Measure the seconds per training step of every method the papers' sweeps run, and the seconds
per evaluated image, for `dg-heads sweep`'s accelerator-hours estimate.

    python experiments/bench_step_time.py --device cuda --precision bf16-mixed     (`make gpu-check`)
    python experiments/bench_step_time.py --model dg-tiny-vit --device cpu --precision 32-true \\
        --steps 2 --warmup 1 --per-domain 2 --domains 3 --eval-batch 8 --out /tmp/step_times.json

Each method is built exactly as its sweep jobs build it: the method's config files from the sweep
specs (`{dataset}` read as PACS; the spec's dataset only changes the class count, which costs
nothing measurable), through the CLI's own parser (`DGHeadsCLI(run=False)`), with random weights
(`pretrained: null`: the same arithmetic as OpenAI's). One step is what `training_step` does: the
method's `training_loss` on `domains` x `per_domain` images under the precision's autocast, its
backward, an AdamW step. The figure is the median over `--steps` timed steps after `--warmup`.
Evaluation: the zero-shot model's forward over `--eval-batch` images, per image (what validation
and test cost; a trained method's adapters add little to a forward). AAT's training-free searches
(scan, GA; one `search` entry per model and precision, whatever the strategy): their scorer
(`MaskScorer`, every block's input cached) over `--eval-batch` images, per image: filling the
cache (`s_fill_per_image`), scoring one mask that ablates a head of block 0, so every block runs
(`s_score_per_image`), and the unablated mask, which runs no block (`s_score_overhead_per_image`:
the final norm, projection and classifier); with the grid (`blocks`, `heads`) and the bytes of one
block's input per image (`level_bytes_per_image`), from which the estimate plans the job's cache
and counts its masks and blocks (`dg_heads.methods.aat.scorer.search_cost`).

The entries (device name, model, method, precision, images per step, s/step, date) go into
`--out` (default experiments/measured/step_times.json), replacing earlier entries of the same
kind, device, model, method, precision and batch; `dg-heads sweep` reads them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SWEEPS = [REPO / "experiments/sweeps/hap.yaml", REPO / "experiments/sweeps/hap_ablation.yaml"]
OUT = REPO / "experiments/measured/step_times.json"


def sweep_methods(specs: list[Path]) -> dict[str, dict]:
    """Every method of the sweep specs (the first spec naming it wins): its config files, as the
    jobs compose them (`{dataset}` read as PACS), and its subcommand."""
    methods = {}
    for path in specs:
        raw = yaml.safe_load(path.read_text())
        for name, value in raw["methods"].items():
            value = {"configs": value} if isinstance(value, list) else dict(value or {})
            configs = [c.replace("{dataset}", "pacs").replace("{method}", name)
                       for c in value.get("configs") or raw["configs"]]
            methods.setdefault(name, {"configs": [str(REPO / c) for c in configs],
                                      "subcommand": value.get("subcommand", "fit")})
    return methods


def build(configs: list[str], model: str | None, device: str):
    """The LightningModule the CLI builds from these config files (random weights)."""
    from dg_heads.lightning_cli import DGHeadsCLI

    args = [a for c in configs for a in ("--config", c)]
    args += ["--model.init_args.clip.pretrained", "null", "--trainer.accelerator", "cpu", "--trainer.logger", "false",
             "--trainer.precision", "32-true", "--data.init_args.test_domains", '["sketch"]']  # (the trainer is unused)
    if model:
        args += ["--model.init_args.clip.model_name", model]
    argv, sys.argv = sys.argv, sys.argv[:1]  # this script's own arguments are not the CLI's
    try:
        return DGHeadsCLI(args=args, run=False).model
    finally:
        sys.argv = argv


def prepare(module, classes: int, domains: int, device: str):
    embed_dim = module.clip.text_projection.shape[1]
    torch.manual_seed(0)
    module.classifier = torch.nn.Parameter(torch.randn(classes, embed_dim), requires_grad=False)
    module.configure_trainable()
    module.num_domains = domains  # what `setup` sets in a run
    return module.to(device)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_calls(call, steps: int, warmup: int, device: str) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(steps):
        synchronize(device)
        start = time.perf_counter()
        call()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def autocast(device: str, precision: str):
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype is not None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweeps", type=Path, nargs="+", default=SWEEPS)
    parser.add_argument("--methods", nargs="+", default=None, help="only these (default: every method of the sweeps)")
    parser.add_argument("--model", default=None, help="replaces the configs' model (default: theirs, ViT-B-16)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default=None, help="default: bf16-mixed on CUDA, else 32-true")
    parser.add_argument("--per-domain", type=int, default=32, help="images per source domain a step (the configs' 32)")
    parser.add_argument("--domains", type=int, nargs="+", default=[3, 5],
                        help="source domains a step (3: PACS, VLCS, OfficeHome, TerraIncognita; 5: DomainNet)")
    parser.add_argument("--eval-batch", type=int, default=256, help="images per evaluation forward (eval_batch_size)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    precision = args.precision or ("bf16-mixed" if args.device.startswith("cuda") else "32-true")
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    methods = sweep_methods(args.sweeps)
    unknown = sorted(set(args.methods or []) - set(methods))
    if unknown:
        print(f"error: --methods {unknown}: not in the sweeps {[str(s) for s in args.sweeps]} "
              f"(their methods: {sorted(methods)})", file=sys.stderr)
        sys.exit(2)
    entries, measured = [], set()
    for name, method in methods.items():
        if args.methods and name not in args.methods:
            continue
        module = build(method["configs"], args.model, args.device)
        model_name = module.clip_spec.model_name if hasattr(module, "clip_spec") else args.model
        base = {"device": device_name, "model": model_name, "precision": precision, "date": date}
        if method["subcommand"] == "test":  # nothing trains: the evaluation figure
            forward = evaluator(prepare(module, 7, 1, args.device).eval(), args.eval_batch, args.device, precision)
            seconds = time_calls(forward, args.steps, args.warmup, args.device)
            entries.append({"kind": "eval", **base, "batch": args.eval_batch, "s_per_image": seconds / args.eval_batch})
            print(f"{model_name} eval: {seconds / args.eval_batch * 1e3:.3f} ms/image ({device_name}, {precision})")
            continue
        strategy = getattr(getattr(module, "search_spec", None), "strategy", None)
        if strategy in ("scan", "ga"):  # one figure for every search of this model and precision
            if (model_name, "search") not in measured:
                measured.add((model_name, "search"))
                scorer = search_scorer(prepare(module, 7, 1, args.device).eval(), args.device, precision)
                entry = {"kind": "search", **base, "batch": args.eval_batch,
                         **time_search(scorer, args.eval_batch, args.steps, args.warmup, args.device)}
                entries.append(entry)
                print(f"{model_name} search: cache fill {entry['s_fill_per_image'] * 1e3:.3f} ms/image, one mask "
                      f"{entry['s_score_per_image'] * 1e3:.3f} ms/image from block 0 "
                      f"({entry['s_score_overhead_per_image'] * 1e3:.3f} ms/image running no block) "
                      f"({device_name}, {precision})")
            continue
        for domains in args.domains:
            module = prepare(module, 7, domains, args.device).train()
            step = stepper(module, args.per_domain, domains, args.device, precision)
            seconds = time_calls(step, args.steps, args.warmup, args.device)
            images = args.per_domain * domains
            entries.append({"kind": "train_step", **base, "method": name, "per_domain": args.per_domain,
                            "domains": domains, "images_per_step": images, "s_per_step": seconds,
                            "steps_timed": args.steps})
            print(f"{model_name}/{name}: {seconds:.4f} s/step at {images} images ({device_name}, {precision})")
        del module
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    write(args.out, entries)
    print(f"{len(entries)} entries written to {args.out}")


def image_size(module) -> int:
    from dg_heads.backbone import image_size_of

    return image_size_of(module.clip)


def evaluator(module, batch: int, device: str, precision: str):
    """One evaluation forward over `batch` images, as validation and test take it."""
    size = image_size(module)
    images = torch.randn(batch, 3, size, size, device=device)

    def forward() -> None:
        with torch.inference_mode(), autocast(device, precision):
            module(images)

    return forward


def search_scorer(module, device: str, precision: str):
    """AAT's scorer of this module as its search builds it (`_scorer`): every block's input cached."""
    import torch.nn.functional as F

    from dg_heads.methods.aat.scorer import MaskScorer

    return MaskScorer(module.clip, lambda f: module.logits(F.normalize(f, dim=-1)), module.search_spec.mode,
                      module.search_spec.alpha, num_domains=1, autocast=lambda: autocast(device, precision))


def time_search(scorer, batch: int, steps: int, warmup: int, device: str) -> dict:
    """Seconds per image of filling the scorer's cache with `batch` images, and of scoring one mask
    from block 0 (every block runs) and the unablated one (no block runs: the cache holds the
    last block's output); with the grid and the bytes of one cached block input per image."""
    from dg_heads.backbone import image_size_of
    from dg_heads.heads import HeadMask

    size = image_size_of(scorer.model)
    images = torch.randn(batch, 3, size, size, device=device)
    labels = torch.zeros(batch, dtype=torch.long, device=device)

    def fill() -> None:
        scorer.batches.clear()  # one batch held, whatever the repeats
        scorer.add(images, labels, 0)

    s_fill = time_calls(fill, steps, warmup, device)
    blocks, heads = scorer.grid
    first_block, unablated = HeadMask.from_pairs([(0, 0)]), HeadMask()
    s_score = time_calls(lambda: scorer.counts(first_block), steps, warmup, device)  # uncached: `counts`, not `score`
    s_overhead = time_calls(lambda: scorer.counts(unablated), steps, warmup, device)
    level = scorer.batches[0].block_inputs[1]  # a block's output, as the module plans its cache (`_plan_cache`)
    return {"blocks": blocks, "heads": heads, "level_bytes_per_image": level[0].numel() * level.element_size(),
            "s_fill_per_image": s_fill / batch, "s_score_per_image": s_score / batch,
            "s_score_overhead_per_image": s_overhead / batch, "steps_timed": steps}


def stepper(module, per_domain: int, domains: int, device: str, precision: str):
    """One training step as `training_step` takes it: loss, backward, AdamW step."""
    from dg_heads.optim import build_optimizer

    size = image_size(module)
    count = domains * per_domain
    images = torch.randn(count, 3, size, size, device=device)
    labels = torch.randint(0, module.classifier.shape[0], (count,), device=device)
    domain_ids = torch.arange(domains, device=device).repeat_interleave(per_domain)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = build_optimizer(module.optim_spec, [{"params": params}], 1000)["optimizer"]

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss, _ = module.training_loss(images, labels, domain_ids)
        loss.backward()
        optimizer.step()

    return step


def write(path: Path, entries: list[dict]) -> None:
    """Merge into `path`: an earlier entry of the same kind, device, model, method, precision and
    batch is replaced; others are kept (other models, other GPUs)."""
    def key(entry: dict) -> tuple:
        return tuple(str(entry.get(k)) for k in ("kind", "device", "model", "method", "precision",
                                                   "images_per_step", "batch"))

    old = json.loads(path.read_text()).get("entries", []) if path.is_file() else []
    new_keys = {key(e) for e in entries}
    merged = [e for e in old if key(e) not in new_keys] + entries
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"written_by": "experiments/bench_step_time.py (make gpu-check)",
                                "entries": merged}, indent=1) + "\n")


if __name__ == "__main__":
    main()
