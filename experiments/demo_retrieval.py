"""`make demo-retrieval`: image-text retrieval on the built-in DigitCaptions (no download, CPU):
zero-shot recall of the tiny CLIP, then AAT from a fine-tuned model, each printing its recall table.

    python experiments/demo_retrieval.py                     # what `make demo-retrieval` runs
    python experiments/demo_retrieval.py --strategies ga -- --trainer.max_epochs 1   # extra args for every run

1. zero-shot: `lightning test` with configs/method/zero_shot.yaml on configs/data/digit_captions.yaml;
2. fine-tune (both towers, CLIP's contrastive loss; the checkpoint selected by `val/rsum`), unless
   a finished one is in `runs/digit_captions/finetune/` (`metrics_fit.json` and one `best-*.ckpt`);
3. AAT (scan by default) from that checkpoint: the heads it ablates, validation RSUM without and
   with them, and the masked model's val and test recall.
The tiny CLIP is randomly initialised (zero-shot is at chance): a GPU user reproduces the
published zero-shot figures with the ViT-B configs instead (README, "Retrieval").
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from demo_aat import demo_configs as aat_demo_configs  # experiments/ (the script's folder, first on sys.path)
from demo_aat import finetuned_checkpoint

from dg_heads.methods.aat.module import STRATEGIES

FINETUNE_RUNS = Path("runs/digit_captions/finetune")  # under the current folder
STRATEGY_ARGS = {"bp": ["--model.init_args.optim.lr", "5.0e-2"]}  # as demo_aat.py: strengths move at this rate


def demo_configs(method: str) -> list[str]:
    """`--config` arguments: DigitCaptions, the method, the demo preset (tiny CLIP on the CPU), as demo_aat's."""
    return aat_demo_configs(method, data="digit_captions")


def run(subcommand: str, method: str, *args: str) -> None:
    """One `lightning <subcommand>` (the same CLI, through this interpreter); stop on failure."""
    command = [sys.executable, "-m", "dg_heads", subcommand, *demo_configs(method), *args]
    if subcommand == "fit":
        command += ["--test_after_fit", "true"]
    done = subprocess.run(command)
    if done.returncode != 0:
        sys.exit(f"error: the {method} retrieval demo failed (exit {done.returncode}): {' '.join(command)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="demo_retrieval.py", description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=["scan"])
    parser.add_argument("extra", nargs="*", help="after `--`: arguments added to every run")
    args = parser.parse_args(argv)
    print("dg-heads demo-retrieval: zero-shot", flush=True)
    run("test", "zero_shot", *args.extra)
    checkpoint = finetuned_checkpoint(FINETUNE_RUNS)
    if checkpoint is None:
        print(f"dg-heads demo-retrieval: fine-tuning (no finished run in {FINETUNE_RUNS}/)", flush=True)
        run("fit", "finetune", *args.extra)
        checkpoint = finetuned_checkpoint(FINETUNE_RUNS)
        if checkpoint is None:
            sys.exit(f"error: the fine-tuning left no best-*.ckpt with metrics_fit.json in {FINETUNE_RUNS}/")
    for strategy in args.strategies:
        print(f"dg-heads demo-retrieval: aat_{strategy} from {checkpoint} (the fine-tuned checkpoint selected "
              f"by val/rsum)", flush=True)
        run("fit", f"aat_{strategy}", "--model.init_args.init_checkpoint", str(checkpoint),
            *STRATEGY_ARGS.get(strategy, []), *args.extra)


if __name__ == "__main__":
    main()
