"""Cost of AAT's searches with and without caches, on a real ViT-B-16 (random init).

    python experiments/bench_aat.py --model ViT-B-16 --images 16 --out docs/benchmarks.md

Cost unit: one full scoring pass (every block over every scoring image). The scorer counts the
block forwards it really runs; without caches every mask evaluation is one full pass.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from bench_report import section, update_section

import dg_heads.backbone  # noqa: F401
from dg_heads import heads
from dg_heads.methods.aat import GASpec, MaskScorer, genetic_search, scan


def scorer_for(model, images, labels, domains: int) -> MaskScorer:
    classes = int(labels.max()) + 1
    centres = F.normalize(torch.randn(classes, model.text_projection.shape[1]), dim=-1)
    scorer = MaskScorer(model, lambda f: F.normalize(f, dim=-1) @ centres.T.to(f), num_domains=domains)
    for d, (x, y) in enumerate(zip(images.chunk(domains), labels.chunk(domains))):
        scorer.add(x, y, d)
    return scorer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--generations", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = heads.convert(open_clip.create_model(args.model).eval().to(args.device))
    size = dg_heads.backbone.image_size_of(model)
    images = torch.randn(args.images, 3, size, size, device=args.device)
    labels = torch.randint(0, 7, (args.images,), device=args.device)
    shape = heads.head_grid(model)

    scorer = scorer_for(model, images, labels, domains=2)
    start = time.perf_counter()
    scan(scorer, progress=False)
    scan_seconds = time.perf_counter() - start
    scan_cost, scan_evals = scorer.cost, len(scorer.scores)

    start = time.perf_counter()
    with torch.no_grad():
        model.encode_image(images)
    full_pass = time.perf_counter() - start

    ga = scorer_for(model, images, labels, domains=2)
    spec = GASpec(population=args.population, generations=args.generations, init_density=0.03, seed=0)
    start = time.perf_counter()
    genetic_search(ga, spec, progress=False)
    ga_seconds = time.perf_counter() - start

    heads_total = shape[0] * shape[1]
    rows = [
        "| search | mask evaluations | cost with caches (full passes) | cost without caches | ratio "
        "| wall s (cached) |",
        "|---|---|---|---|---|---|",
        f"| scan, every head alone | {scan_evals} | {scan_cost:.1f} | {scan_evals} | {scan_cost / scan_evals:.3f} "
        f"| {scan_seconds:.1f} |",
        f"| GA, population {spec.population} x {spec.generations} generations | {ga.evaluations} "
        f"({len(ga.scores)} unique) | {ga.cost:.1f} | {ga.evaluations} | {ga.cost / ga.evaluations:.3f} "
        f"| {ga_seconds:.1f} |",
    ]
    body = section(
        f"AAT search cost ({args.model}, {heads_total} heads, {args.images} scoring images, {args.device})",
        f"python experiments/bench_aat.py --model {args.model} --images {args.images} "
        f"--population {args.population} --generations {args.generations}",
        "cost unit: one full scoring pass (every block over every scoring image, counted by the scorer); the "
        "caches are the inputs of every block for the scoring data (filled by one pass, included) and the "
        "fitness of masks already seen.",
        [*rows, "",
         f"Scan target: at most 0.6 x {heads_total} = {0.6 * heads_total:.1f} full passes; measured {scan_cost:.1f} "
         f"(1 + H (L + 1) / 2). One full pass over the scoring images took {full_pass:.2f} s here."],
    )
    print(body)
    if args.out:
        update_section(args.out, f"bench_aat_{args.device}", body)


if __name__ == "__main__":
    main()
