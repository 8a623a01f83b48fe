"""A scale rehearsal: what a DomainNet-sized run asks of a rank before and during its first steps.

    python experiments/bench_scale.py --out docs/benchmarks.md        # CPU here (~10 min on 2 cores)
    python experiments/bench_scale.py --device cuda --out docs/benchmarks.md  # `make gpu-check`

1. Data: a DomainNet-shaped index (6 domains, 345 classes, 586,575 entries: the registry's counts,
   file names as DomainBed's copy has them) written as the folder index the DataModule reads
   (`dg_heads.data.folder`'s Arrow cache; no image files: pixels do not matter here), then the
   real `DomainBedDataModule` with the shipped `configs/data/domain_net.yaml` settings, in a
   fresh process: `prepare_data` + `setup("fit")` time and resident memory, the worker processes
   its training and validation loaders declare and, started, really are (counted in /proc), and
   the training samplers' memory (pickled state; and what iterating holds, by tracemalloc).
2. The zero-shot text head: `DGModule.text_classifier` (open_clip's `build_zero_shot_classifier`)
   at DomainNet's class names x 80 `openai_imagenet` templates, ViT-B/16's text tower (random
   init). On a CPU a share of the classes is timed and scaled to 345 (the build is linear in
   prompts: batches of 10 classes); on CUDA all 345.
3. The AAT scorer's cache (every block's input, for every scoring image) of every shipped AAT
   config at ViT-B/16 and ViT-L/14, on DomainNet with clipart held out (the largest scoring set).
4. HAP's memory without and with activation checkpointing: the bytes a step holds beyond the
   model (saved for backward + gradients + AdamW's moments), counted as `bench_hap.py` does.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import yaml

from dg_heads.data.registry import get_dataset
from dg_heads.data.splits import holdout_split

# bench_hap and bench_report (beside this script, on sys.path when it runs) are imported where they are
# used: tests import this file as `experiments.bench_scale` for `aat_cache_bytes`
ROOT = Path(__file__).resolve().parents[1]

DATA_CONFIG = ROOT / "configs/data/domain_net.yaml"
AAT_CONFIGS = sorted((ROOT / "configs/method").glob("aat_*.yaml"))
HELD_OUT = "clipart"  # the smallest domain: held out, it leaves the largest sources
TEMPLATES = "openai_imagenet"
MIB = 2**20


# ------------------------------------------------------------------ 1. the DataModule at DomainNet size
def shipped_data_args() -> dict:
    return yaml.safe_load(DATA_CONFIG.read_text())["data"]["init_args"]


def domain_counts(scale: float) -> dict[str, int]:
    """Images per domain: the registry's DomainNet counts (586,575 in all), times `scale`."""
    counts = get_dataset("domain_net").counts
    return {d: max(2 * len(get_dataset("domain_net").classes), round(n * scale)) for d, n in counts.items()}


def write_domain_net_index(root: Path, cache: Path, scale: float) -> int:
    """The DomainNet folder index (the Arrow file `load_folder_table` reads while the folder is
    unchanged, under `$DG_HEADS_CACHE` = `cache`), written directly: an empty `root/domain_net`
    folder and one entry per image, spread evenly over the 345 classes. Returns the entries written."""
    from dg_heads.data.folder import FolderScan, _cache_path, _write_cache  # the index's own writer
    from dg_heads.data.table import build_table

    info = get_dataset("domain_net")
    dataset_dir = root / info.folder
    dataset_dir.mkdir(parents=True, exist_ok=True)
    domain, label, ids = [], [], []
    for di, (name, count) in enumerate(domain_counts(scale).items()):
        per_class = np.full(len(info.classes), count // len(info.classes))
        per_class[: count % len(info.classes)] += 1
        for li, cls in enumerate(info.classes):
            ids += [f"{name}/{cls}/{name}_{li:03d}_{i:06d}.jpg" for i in range(per_class[li])]
            domain += [di] * int(per_class[li])
            label += [li] * int(per_class[li])
    table = build_table(list(info.classes), list(info.domains), domain, label, ids)
    scan = FolderScan(dataset_dir, dir_mtimes={".": dataset_dir.stat().st_mtime_ns})
    with mock.patch.dict(os.environ, {"DG_HEADS_CACHE": str(cache)}):
        _write_cache(_cache_path(dataset_dir), table, scan, list(info.domains), list(info.classes), [], False)
    return len(ids)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _children() -> int:
    """Live child processes of this process (DataLoader workers), from /proc."""
    me, count = str(os.getpid()), 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if stat[stat.rindex(")") + 2:].split()[1] == me:  # fields after "(comm)": state, ppid
                count += 1
    return count


def _loaders(loaders) -> list:
    """The DataLoaders inside what a `*_dataloader` hook returns (a DataLoader, a list or dict of
    them, or Lightning's CombinedLoader)."""
    if hasattr(loaders, "flattened"):
        return list(loaders.flattened)
    if isinstance(loaders, dict):
        return list(loaders.values())
    if isinstance(loaders, (list, tuple)):
        return list(loaders)
    return [loaders]


def _training_sampler(loader):
    """The sampler that orders a training loader: a custom batch sampler, else the sampler."""
    batch_sampler = loader.batch_sampler
    if batch_sampler is not None and type(batch_sampler) is not torch.utils.data.BatchSampler:
        return batch_sampler
    return loader.sampler


def measure_datamodule(root: Path, num_workers: int | None, start_workers: bool) -> dict:
    """In a fresh process: the real DataModule over the index under `root`."""
    from dg_heads.data import DomainBedDataModule

    logging.getLogger("dg_heads.data").setLevel(logging.ERROR)  # workers read files that are not there
    args = {**shipped_data_args(), **({"num_workers": num_workers} if num_workers is not None else {})}
    rss_before = _status_kib("VmRSS")
    start = time.perf_counter()
    dm = DomainBedDataModule(test_domains=[HELD_OUT], root=str(root), **args)
    dm.prepare_data()
    dm.setup("fit")
    seconds = time.perf_counter() - start
    rss_after, hwm = _status_kib("VmRSS"), _status_kib("VmHWM")

    train, val = _loaders(dm.train_dataloader()), _loaders(dm.val_dataloader())
    samplers = [_training_sampler(loader) for loader in train]
    pickled = sum(len(pickle.dumps(s)) for s in samplers)
    state = [s.state_dict() for s in samplers if hasattr(s, "state_dict")]
    tracemalloc.start()
    iterators = [iter(s) for s in samplers]
    for it in iterators:
        next(it)  # the first index: the sampler now holds what it keeps while an epoch runs
    iterating, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del iterators

    started = None
    if start_workers:  # the most worker processes alive at once: training's, plus the evaluation loader
        before = _children()  # being read (their workers are not kept between uses)
        live = [iter(loader) for loader in train]
        for it in live:
            next(it)  # the training loader starts its workers at its first batch (samplers.StreamLoader)
        started = _children() - before
        for loader in val:
            reading = iter(loader)  # starts its workers
            started = max(started, _children() - before)
            del reading  # its workers end with the iterator
        del live
    return {
        "entries": len(dm.table.labels), "setup_s": seconds, "rss_mib": (rss_after - rss_before) / 1024,
        "hwm_mib": hwm / 1024, "train_loaders": len(train), "val_loaders": len(val),
        "train_workers": sum(loader.num_workers for loader in train),
        "val_workers": sum(loader.num_workers for loader in val),
        "val_workers_at_once": max((loader.num_workers for loader in val), default=0), "started": started,
        "samplers": len(samplers), "sampler_pickled": pickled,
        "sampler_state": sum(len(pickle.dumps(s)) for s in state) if state else None,
        "sampler_iterating": iterating, "num_workers": args["num_workers"],
    }


def datamodule_rows(scale: float, num_workers: int | None, start_workers: bool) -> tuple[list[str], dict]:
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "data", Path(tmp) / "cache"
        start = time.perf_counter()
        entries = write_domain_net_index(root, cache, scale)
        written = time.perf_counter() - start
        env = {**os.environ, "DG_HEADS_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
        command = [sys.executable, __file__, "--datamodule-in", str(root)]
        command += ["--num-workers", str(num_workers)] if num_workers is not None else []
        command += [] if start_workers else ["--no-start-workers"]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"the DataModule measurement failed:\n{done.stderr[-4000:]}")
        m = json.loads(done.stdout.strip().splitlines()[-1])
    assert m["entries"] == entries, (m["entries"], entries)
    info = get_dataset("domain_net")
    total = m["train_workers"] + m["val_workers_at_once"]  # one evaluation loader is read at a time
    started = "not started (--no-start-workers)" if m["started"] is None else str(m["started"])
    state = "none (no `state_dict`)" if m["sampler_state"] is None else f"{m['sampler_state']:,} B"
    rows = [
        "| quantity | value |", "|---|---|",
        f"| entries / domains / classes | {entries:,} / {len(info.domains)} / {len(info.classes)} |",
        f"| index written (Arrow, not timed in setup) | {written:.1f} s |",
        f"| `prepare_data` + `setup(\"fit\")` (index read, in/out splits) | {m['setup_s']:.2f} s |",
        f"| resident memory: growth during setup / process peak (with torch imported) | {m['rss_mib']:.0f} MiB / "
        f"{m['hwm_mib']:.0f} MiB |",
        f"| training loaders x workers (`num_workers: {m['num_workers']}`) | {m['train_loaders']} loaders, "
        f"{m['train_workers']} workers |",
        f"| validation loaders x workers | {m['val_loaders']} loaders, {m['val_workers']} workers |",
        f"| worker processes per rank (train + val), declared: at most alive at once | {total} |",
        f"| worker processes per rank, started and counted in /proc: most alive at once | {started} |",
        f"| worker processes on an 8-GPU node (8 ranks) | {8 * total} |",
        f"| training samplers ({m['samplers']}): pickled size | {m['sampler_pickled']:,} B |",
        f"| training samplers: checkpointed state (`state_dict`, pickled) | {state} |",
        f"| training samplers: held while iterating (tracemalloc) | {m['sampler_iterating'] / MIB:.1f} MiB |",
    ]
    return rows, m


# ------------------------------------------------------------------ 2. the zero-shot text head
def build_text_head(module, class_names: list[str]) -> torch.Tensor:
    """The text head as a run builds it today (`DGModule.setup`): one call, to swap when it moves."""
    return module.text_classifier(class_names)


def text_head_rows(model: str, classes: int | None, device: str) -> list[str]:
    from dg_heads.backbone import CLIPSpec
    from dg_heads.methods import CLIPBaseline

    info = get_dataset("domain_net")
    names = [info.prompt_name(c) for c in info.classes]
    timed = names[: classes or len(names)]
    torch.manual_seed(0)
    module = CLIPBaseline(CLIPSpec(model_name=model, templates=[TEMPLATES]), mode="zero_shot").to(device).eval()
    templates = len(module.templates)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        build_text_head(module, names[:1])  # CUDA context and kernels: paid once per process, not per build
    sync()
    start = time.perf_counter()
    head = build_text_head(module, timed)
    sync()
    seconds = time.perf_counter() - start
    assert head.shape[0] == len(timed)
    full = seconds * len(names) / len(timed)
    how = "measured" if len(timed) == len(names) else f"scaled from {len(timed)} classes ({seconds:.1f} s)"
    return ["| text tower | classes x templates | prompts | device | build time |", "|---|---|---|---|---|",
            f"| {model} (random init) | {len(names)} x {templates} | {len(names) * templates:,} | {device} "
            f"| {full:.0f} s ({how}) |"]


# ------------------------------------------------------------------ 3. the AAT scorer's cache
def aat_cache_bytes(model: str, images: int, precision: str) -> int:
    """Bytes the scorer would cache with no budget: the input of every block and the last block's output."""
    from dg_heads.methods.aat import cache_bytes, cache_dtype

    return cache_bytes(model, images, dtype=cache_dtype(precision))


def aat_kept(model: str, images: int, precision: str, budget_gb: float) -> str:
    """What the scorer keeps within `search.cache_budget_gb` (the rest is recomputed): GiB and blocks."""
    from dg_heads.methods.aat import cache_bytes, cache_dtype, plan_cache, vision_dims

    layers = vision_dims(model)[2]
    level = cache_bytes(model, images, dtype=cache_dtype(precision), levels=1)
    plan = plan_cache(layers, level, budget_gb * 2**30)
    if plan is None:
        return "does not fit (error before work)"
    return f"{plan.bytes / 2**30:.1f} GiB ({len(plan.levels)}/{layers + 1} levels)"


def scoring_images(config: Path, scale: float) -> tuple[int | None, bool, int, int]:
    """(max_scoring_batches, whether that is `SearchSpec`'s default, eval batch size, scoring images
    over the sources) of an AAT config on DomainNet with clipart held out; null batches: every
    source `out` split, whole."""
    from dg_heads.methods.aat.module import SearchSpec

    method = yaml.safe_load(config.read_text())
    search = method["model"]["init_args"].get("search", {})
    batches = search.get("max_scoring_batches", SearchSpec.max_scoring_batches)
    batch = {**shipped_data_args(), **method.get("data", {}).get("init_args", {})}["eval_batch_size"]
    info, total = get_dataset("domain_net"), 0
    for index, (domain, count) in enumerate(domain_counts(scale).items()):
        if domain != HELD_OUT:
            out = len(holdout_split(count, shipped_data_args().get("trial_seed", 0), index, 0.2)[1])
            total += out if batches is None else min(out, batches * batch)
    assert len(info.domains) == 6
    return batches, "max_scoring_batches" not in search, batch, total


def aat_rows(models: list[str], scale: float, precision: str) -> list[str]:
    names = ["/".join(m.rsplit("-", 1)) for m in models]  # ViT-B-16 -> ViT-B/16
    per_image = ", ".join(f"{n} {aat_cache_bytes(m, 1, precision) / 1e6:.2f} MB" for n, m in zip(names, models))
    rows = [f"Per image ({precision}): {per_image}.", "",
            "| config | strategy | max_scoring_batches x eval batch | scoring images (5 sources) | "
            + " | ".join(f"full cache at {n} | kept within the budget at {n}" for n in names) + " |",
            "|---|---|---|---|" + "---|---|" * len(models)]
    from dg_heads.methods.aat.module import SearchSpec

    for config in AAT_CONFIGS:
        search = yaml.safe_load(config.read_text())["model"]["init_args"]["search"]
        budget = search.get("cache_budget_gb", SearchSpec.cache_budget_gb)
        batches, default, batch, images = scoring_images(config, scale)
        limit = "null (whole `out` splits)" if batches is None else f"{batches} x {batch}"
        limit += " (key absent: the default)" if default else ""
        sizes = " | ".join(f"{aat_cache_bytes(m, images, precision) / 2**30:.1f} GiB | "
                           f"{aat_kept(m, images, precision, budget)} of {budget:g} GiB" for m in models)
        rows.append(f"| `{config.relative_to(ROOT)}` | {search['strategy']} | {limit} | {images:,} | {sizes} |")
    return rows


# ------------------------------------------------------------------ 4. HAP with activation checkpointing
def hap_rows(models: list[str], per_domain: list[int], device: str) -> list[str]:
    """Saved-for-backward bytes of one HAP step without and with `clip.grad_checkpointing: true`
    (`bench_hap.checkpointing_memory`: torch saves a checkpointed block's input as a saved tensor,
    so it is counted too)."""
    from bench_hap import DOMAINS, checkpointing_memory

    rows = ["| model | batch | without checkpointing (MiB) | with `clip.grad_checkpointing: true` (MiB) | saved |",
            "|---|---|---|---|---|"]
    for model, images in zip(models, per_domain):
        memory = checkpointing_memory(model, images, device, "bf16-mixed" if device == "cuda" else "32-true")
        rows.append(f"| {model} | {DOMAINS} domains x {images} images | {memory['without_bytes'] / MIB:.1f} | "
                    f"{memory['with_bytes'] / MIB:.1f} | {memory['saved_fraction']:.0%} |")
    return rows


# ------------------------------------------------------------------ the section
def _load_average() -> str:
    return f"{os.getloadavg()[0]:.1f}"


QUICK = {"scale": 0.01, "num_workers": 1, "text_model": "dg-tiny-vit", "text_classes": 4,
         "hap_models": ["dg-tiny-vit"], "hap_per_domain": [2]}


def main() -> None:
    from bench_report import section, update_section

    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (tests): " + json.dumps(QUICK))
    parser.add_argument("--scale", type=float, default=1.0, help="DomainNet's entries x this")
    parser.add_argument("--num-workers", type=int, default=None, help="default: configs/data/domain_net.yaml's")
    parser.add_argument("--no-start-workers", dest="start_workers", action="store_false")
    parser.add_argument("--text-model", default="ViT-B-16")
    parser.add_argument("--text-classes", type=int, default=None,
                        help="classes timed, scaled to 345 (default: all on CUDA, 8 on a CPU)")
    parser.add_argument("--aat-models", nargs="+", default=["ViT-B-16", "ViT-L-14"])
    parser.add_argument("--hap-models", nargs="+", default=["ViT-B-16", "ViT-L-14"])
    parser.add_argument("--hap-per-domain", nargs="+", type=int, default=[4, 2])
    parser.add_argument("--datamodule-in", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.datamodule_in:
        print(json.dumps(measure_datamodule(args.datamodule_in, args.num_workers, args.start_workers)))
        return
    if args.quick:
        for key, value in QUICK.items():
            if parser.get_default(key) == getattr(args, key):
                setattr(args, key, value)
    if len(args.hap_models) != len(args.hap_per_domain):
        parser.error("--hap-models and --hap-per-domain need one value each per model")
    if args.text_classes is None:
        args.text_classes = None if args.device == "cuda" else 8

    times, load_at_start = {}, _load_average()
    start = time.perf_counter()
    data, _ = datamodule_rows(args.scale, args.num_workers, args.start_workers)
    times["data"] = time.perf_counter() - start
    precision = "bf16-mixed"  # configs/trainer/gpu.yaml's: the AAT configs run under it
    aat = aat_rows(args.aat_models, args.scale, precision)
    start = time.perf_counter()
    text = text_head_rows(args.text_model, args.text_classes, args.device)
    times["text"] = time.perf_counter() - start
    start = time.perf_counter()
    hap = hap_rows(args.hap_models, args.hap_per_domain, args.device)
    times["hap"] = time.perf_counter() - start

    command = (f"python experiments/bench_scale.py --device {args.device} --scale {args.scale:g}"
               + (f" --num-workers {args.num_workers}" if args.num_workers is not None else "")
               + ("" if args.start_workers else " --no-start-workers")
               + f" --text-model {args.text_model}"
               + (f" --text-classes {args.text_classes}" if args.text_classes is not None else "")
               + f" --aat-models {' '.join(args.aat_models)} --hap-models {' '.join(args.hap_models)}"
               + f" --hap-per-domain {' '.join(map(str, args.hap_per_domain))}")
    load = f"{load_at_start} at the start, {_load_average()} at the end, on {os.cpu_count()} CPUs"
    scale = "" if args.scale == 1 else f" x {args.scale:g}"
    body = section(
        f"Scale rehearsal: DomainNet{scale} through the DataModule, the text head, AAT's cache, HAP's memory "
        f"({args.device})",
        command,
        "the DataModule in a fresh process over a written DomainNet index (no image files: setup, workers and "
        "samplers never read pixels; started workers find no files and are stopped); clipart held out; "
        "shipped `configs/data/domain_net.yaml` settings. Wall time of the parts: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
        + f"; load average (1 min, every process on the machine) {load}: timings grow with it.",
        ["### The DataModule (one rank)", "", *data, "",
         f"### The zero-shot text head (`DGModule.text_classifier`, `{TEMPLATES}` templates)", "", *text, "",
         "Built in `setup`, on every rank (issue 23, item 4).", "",
         "### AAT scorer cache of the shipped configs (DomainNet, clipart held out, one process)", "", *aat, "",
         "Layers + 1 tensors of (image / patch)^2 + 1 tokens x width per image (the input of every block and "
         "the last block's output), in the autocast dtype.", "",
         "### HAP: bytes a step holds beyond the model, without and with activation checkpointing", "", *hap, "",
         "Saved for backward (distinct storages, `saved_tensors_hooks`, as `bench_hap.py` counts them) + gradients "
         "+ AdamW's two moments; with checkpointing, the checkpointed blocks' inputs are among the saved tensors "
         f"(`torch.utils.checkpoint` keeps them so); the backward's recomputation holds one block's activations "
         f"at a time on top, not counted here. {'bf16-mixed' if args.device == 'cuda' else 'fp32'}; "
         "random init; routing `gates` (the shipped `hap`)."],
    )
    print(body)
    if args.out:
        update_section(args.out, f"bench_scale_{args.device}", body)


if __name__ == "__main__":
    main()
