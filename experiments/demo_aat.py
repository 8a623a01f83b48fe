"""`make demo-aat`: the AAT demos (scan, GA, BP) on RotatedDigits, each starting from the
fine-tuning demo's model, each testing its masked model on the held-out domain.

    python experiments/demo_aat.py                      # what `make demo-aat` runs
    python experiments/demo_aat.py --strategies ga -- --trainer.max_epochs 1   # extra CLI args for every run

The randomly initialised tiny CLIP has nothing to ablate (every mask scores chance), so the
demos start from the fine-tuning demo's checkpoint: the one its training-domain validation
selected (`checkpoints/best-*.ckpt`, highest `val/acc`, the model `make demo` tested and printed
the table of; not `last.ckpt`), of the newest run in `runs/rotated_digits/finetune/` whose fit
finished (`metrics_fit.json` written). Where there is none, the fine-tuning demo runs first,
with `make demo`'s command. Runs land where `lightning fit` puts them, under the current folder.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

from dg_heads.methods.aat.module import STRATEGIES

REPO = Path(__file__).resolve().parents[1]

FINETUNE_RUNS = Path("runs/rotated_digits/finetune")  # `make demo`'s run folder, under the current folder


def demo_configs(method: str, data: str = "rotated_digits") -> list[str]:
    """`--config` arguments of a method's demo, as the Makefile composes them (the demo preset
    last: the CLI refuses it before the method file)."""
    files = (f"data/{data}.yaml", f"method/{method}.yaml", "trainer/demo.yaml")
    return [arg for name in files for arg in ("--config", str(REPO / "configs" / name))]


def finetuned_checkpoint(runs: Path = FINETUNE_RUNS) -> Path | None:
    """The val/acc-selected checkpoint of the newest fine-tune run whose fit finished, or None.

    Newest by version number (`version_10` after `version_9`), so a second `make demo` is used
    once it has finished; a run stopped half-way (no `metrics_fit.json`) or without exactly one
    `best-*.ckpt` is passed over."""
    versions = [p for p in runs.glob("version_*") if re.fullmatch(r"version_\d+", p.name)]
    for version in sorted(versions, key=lambda p: int(p.name.split("_")[1]), reverse=True):
        best = sorted((version / "checkpoints").glob("best-*.ckpt"))
        if (version / "metrics_fit.json").is_file() and len(best) == 1:
            return best[0]
    return None


# Per search, on top of the demo preset: the preset's learning rate (1e-3) is the fine-tuning
# demo's, for weights; BP trains 16 ablation strengths from 0.05, which at 1e-3 barely move in
# the demo's 4 epochs (measured: they ended between 0.043 and 0.056, so the top-5 were arbitrary
# heads: source val 0.8451 -> 0.5755). 5e-2 is the rate the AAT demos had before the preset.
STRATEGY_ARGS = {"bp": ["--model.init_args.optim.lr", "5.0e-2"]}


def fit(method: str, *args: str) -> None:
    """One `lightning fit` of a demo (the same CLI, through this interpreter); stop on failure."""
    command = [sys.executable, "-m", "dg_heads", "fit", *demo_configs(method), "--test_after_fit", "true", *args]
    done = subprocess.run(command)
    if done.returncode != 0:
        sys.exit(f"error: the {method} demo failed (exit {done.returncode}): {' '.join(command)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="demo_aat.py", description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("extra", nargs="*", help="after `--`: arguments added to every `lightning fit`")
    args = parser.parse_args(argv)
    checkpoint = finetuned_checkpoint()
    if checkpoint is None:
        print(f"dg-heads demo-aat: no finished fine-tuning demo in {FINETUNE_RUNS}/: running it first (`make demo`)",
              flush=True)
        fit("finetune", *args.extra)
        checkpoint = finetuned_checkpoint()
        if checkpoint is None:
            sys.exit(f"error: the fine-tuning demo left no best-*.ckpt with metrics_fit.json in {FINETUNE_RUNS}/")
    for strategy in args.strategies:
        print(f"dg-heads demo-aat: aat_{strategy} from {checkpoint} (the fine-tuning demo's checkpoint selected "
              f"by val/acc)", flush=True)
        fit(f"aat_{strategy}", "--model.init_args.init_checkpoint", str(checkpoint),
            *STRATEGY_ARGS.get(strategy, []), *args.extra)


if __name__ == "__main__":
    main()
