"""How many DataLoader workers a training step needs so that it never waits for data.

    python experiments/bench_loader.py --out docs/benchmarks.md

1. Writes a fake PACS copy of 227x227 JPEGs (PACS's image size; smooth random content so the
   files are the size of real photos), indexes it through the real `DomainBedDataModule`.
2. Per-worker throughput: images per second of decode + DomainBed augmentation (one process,
   the work one DataLoader worker does), and of the evaluation transform.
3. Step throughput: images per second a ViT-B/16 HAP training step consumes (3 source domains x
   `per-domain` images; bf16 autocast on CUDA) on this machine's device; `--step-images-per-sec` takes a
   figure measured elsewhere (a GPU) instead.
4. Workers needed = ceil(step throughput / per-worker throughput), with a 25% margin.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_report import section, update_section
from PIL import Image

from dg_heads.data import DomainBedDataModule
from dg_heads.data.registry import get_dataset

MARGIN = 1.25


def write_fake_pacs(root: Path, per_class: int, seed: int = 0) -> int:
    """PACS-sized JPEGs: a smooth random field (upsampled noise) plus grain, quality 90."""
    rng = np.random.default_rng(seed)
    info = get_dataset("pacs")
    sizes = []
    for domain in info.domains:
        for cls in info.classes:
            folder = root / info.folder / domain / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                coarse = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
                low = Image.fromarray(coarse).resize((227, 227), Image.BICUBIC)
                grain = rng.normal(0, 12, (227, 227, 3))
                pixels = np.clip(np.asarray(low, dtype=np.float64) + grain, 0, 255).astype(np.uint8)
                path = folder / f"{i:05d}.jpg"
                Image.fromarray(pixels).save(path, quality=90)
                sizes.append(path.stat().st_size)
    return int(np.mean(sizes))


def per_worker_throughput(dataset, seconds: float) -> float:
    """Images per second one process decodes and transforms (what one worker does)."""
    n, start = 0, time.perf_counter()
    order = np.random.default_rng(0).permutation(len(dataset))
    while time.perf_counter() - start < seconds:
        dataset[int(order[n % len(order)])]
        n += 1
    return n / (time.perf_counter() - start)


def step_throughput(per_domain: int, device: str, precision: str, repeats: int) -> float:
    """Images per second a ViT-B/16 HAP training step consumes."""
    from bench_hap import DOMAINS, build, stepper
    from bench_report import interleaved

    step, _ = stepper(build("hap", "ViT-B-16", device), per_domain, device, precision)
    seconds = interleaved({"hap": step}, repeats)["hap"]
    return DOMAINS * per_domain / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-class", type=int, default=30, help="images per class and domain (4 x 7 x this)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--per-domain", type=int, default=32, help="training images per source domain per step")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default=None,
                        help="bf16-mixed (default on CUDA) or 32-true (default on CPU, where bf16 autocast is slow)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--step-images-per-sec", type=float, default=None,
                        help="use this measured step throughput instead of timing one here")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.precision = args.precision or ("bf16-mixed" if args.device == "cuda" else "32-true")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a DataLoader worker runs single-threaded

    with tempfile.TemporaryDirectory() as tmp:
        mean_bytes = write_fake_pacs(Path(tmp), args.per_class)
        dm = DomainBedDataModule("pacs", ["sketch"], root=tmp, image_size=224, num_workers=0, train_augment="domainbed")
        dm.setup("fit")
        train = per_worker_throughput(dm.train_sets["photo"], args.seconds)
        evaluation = per_worker_throughput(dm.test_sets["sketch"], args.seconds)
    torch.set_num_threads(threads)

    if args.step_images_per_sec is not None:
        step, step_note = args.step_images_per_sec, "given with --step-images-per-sec"
    else:
        step = step_throughput(args.per_domain, args.device, args.precision, args.repeats)
        step_note = f"measured here: ViT-B/16 HAP step, 3 x {args.per_domain} images, {args.device}, {args.precision}"
    workers = math.ceil(step * MARGIN / train)
    lines = [
        "| quantity | value |", "|---|---|",
        f"| mean JPEG size (227x227, quality 90) | {mean_bytes / 1024:.1f} KiB |",
        f"| decode + DomainBed augmentation, per worker | {train:.0f} images/s |",
        f"| decode + CLIP eval transform, per worker | {evaluation:.0f} images/s |",
        f"| training step consumes ({step_note}) | {step:.0f} images/s |",
        f"| workers so the step never waits (x{MARGIN} margin) | {workers} |",
    ]
    body = section(
        "Data loading: images per second per worker, and the workers a training step needs",
        "python experiments/bench_loader.py" + (f" --step-images-per-sec {args.step_images_per_sec:g}"
                                                 if args.step_images_per_sec
                                                 else f" --device {args.device} --precision {args.precision}"
                                                 f" --per-domain {args.per_domain}"),
        f"per-worker figures: one single-threaded process over {4 * 7 * args.per_class} generated PACS-sized "
        f"JPEGs for {args.seconds:g} s each, through the real DataModule (Arrow index, DomainBed order).",
        lines,
    )
    print(body)
    if args.out:
        update_section(args.out, f"bench_loader_{args.device}", body)


if __name__ == "__main__":
    main()
