"""What `dg-heads atlas` costs at ViT-B/16: passes over the sample and seconds per phase.

    python experiments/bench_atlas.py --out docs/benchmarks.md

A random-init ViT-B-16 (the cost does not depend on the weights) on a small fake DomainBed
folder at 224 px (2 source domains + 1 held out), through the real command (`dg_heads.atlas.cli.main`),
its phases timed apart (`cost` in atlas.json): the setup (reading the config, building the model
and the data, the class prompts through the text tower, AAT's scorer), the decomposition (one
forward pass, whose block inputs also fill AAT's scorer cache), the zero-ablation scan of the
last `--ablation_blocks` blocks (each head from its own block onwards), the measures computed
from the decomposition (accuracy alone, mean ablation, domain MMD and probe), TextSpan's words
(the text pool and the class prompts through the text tower, then the greedy basis) and the
page (HTML, PNGs, CSV, JSON, TensorBoard). Passes are counted by the scorer, in units of one
full pass over the sample.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import yaml
from bench_report import section, update_section  # experiments/ (the script's folder, first on sys.path)
from PIL import Image

from dg_heads.atlas import cli as atlas_cli


def fake_folder(root: Path, per_domain: int) -> Path:
    rng = np.random.default_rng(0)
    folder = root / "bench_atlas_data"
    for domain in ("a", "b", "c"):
        for cls in ("cat", "dog"):
            (folder / domain / cls).mkdir(parents=True, exist_ok=True)
            for i in range(per_domain // 2):
                pixels = rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / domain / cls / f"{i}.png")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--images", type=int, default=3, help="images per source domain")
    parser.add_argument("--ablation_blocks", type=int, default=4)
    parser.add_argument("--words_blocks", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None, help="Markdown file to update (docs/benchmarks.md)")
    args = parser.parse_args()
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = fake_folder(tmp, 2 * args.images)
        config = {"seed_everything": 0,
                  "model": {"class_path": "dg_heads.methods.CLIPBaseline",
                            "init_args": {"mode": "zero_shot", "clip": {"model_name": args.model, "pretrained": None}}},
                  "data": {"class_path": "dg_heads.data.DomainBedDataModule",
                           "init_args": {"dataset": str(folder), "test_domains": ["c"], "image_size": 224,
                                         "holdout_fraction": 0.5, "num_workers": 0, "root": str(tmp)}}}
        (tmp / "config.yaml").write_text(yaml.safe_dump(config))
        atlas_cli.main([str(tmp / "config.yaml"), "--out", str(tmp / "atlas"), "--images_per_domain",
                        str(args.images), "--ablation_blocks", str(args.ablation_blocks), "--words_blocks",
                        str(args.words_blocks), "--accelerator", device])
        atlas = json.loads((tmp / "atlas/atlas.json").read_text())
    blocks, num_heads = atlas["grid"]
    cost, seconds, passes = atlas["cost"], atlas["cost"]["seconds"], atlas["cost"]["passes"]
    images = atlas["meta"]["images"]
    scanned = min(args.ablation_blocks, blocks) if args.ablation_blocks >= 0 else blocks
    full_scan = num_heads * (blocks + 1) / 2
    pass_seconds = seconds["decomposition"] / passes["decomposition"]
    lines = [
        "| phase | passes over the sample | seconds |", "|---|---|---|",
        f"| setup: config, model build, data index, class prompts through the text tower | 0 | "
        f"{seconds['setup']:.1f} |",
        f"| decomposition (one forward with taps; fills the scorer's cache) | {passes['decomposition']} | "
        f"{seconds['decomposition']:.1f} |",
        f"| zero ablation, {scanned * num_heads} heads of the last {scanned} blocks | {passes['zero_ablation']:.1f} | "
        f"{seconds['zero_ablation']:.1f} |",
        f"| measures from the decomposition: accuracy alone, mean ablation, domain MMD, linear probe "
        f"({blocks * num_heads} heads) | 0 | {seconds['measures']:.1f} |",
        f"| TextSpan words (last {args.words_blocks} blocks, pool + class prompts) | 0 | {seconds['words']:.1f} |",
        f"| page: HTML, PNGs, CSV, JSON, TensorBoard | 0 | {seconds['page']:.1f} |",
        f"| **total** (the command's wall time) | **{cost['passes_over_data']:.1f}** | **{seconds['total']:.1f}** |",
        "",
        f"{images} images ({args.images} per source domain, 2 source domains), {blocks} blocks x {num_heads} heads. "
        f"Zero-ablating every head (`--ablation_blocks -1`, the default) costs 1 + H (L + 1) / 2 = "
        f"{1 + full_scan:.0f} passes at this size (AAT's scan); at one pass per {pass_seconds:.1f} s here that "
        f"is ~{(1 + full_scan) * pass_seconds:.0f} s for this sample, and it grows linearly with the images. "
        f"The setup, measures, words and page do not pass over the images; the setup and words are "
        f"independent of the sample's size.",
    ]
    command = (f"python experiments/bench_atlas.py --model {args.model} --images {args.images} "
               f"--ablation_blocks {args.ablation_blocks} --words_blocks {args.words_blocks}")
    body = section(f"Head atlas cost ({args.model}, {images} images, {device}, fp32)", command,
                   "passes counted by the scorer (one pass = every block over every image); seconds from one run "
                   f"(`cost` in atlas.json, each phase timed apart), the machine shared with other jobs (load "
                   f"average {load[0]:.1f} before, {os.getloadavg()[1]:.1f} over the last 5 minutes after, "
                   f"on {os.cpu_count()} CPUs).", lines)
    print(body)
    if args.out is not None:
        update_section(args.out, f"bench_atlas_{device}", body)


if __name__ == "__main__":
    main()
