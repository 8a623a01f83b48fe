"""`dg-heads atlas MODEL [--compare OTHER] [--data FILE]`: every head of a CLIP image tower on one page.

MODEL is a dg-heads checkpoint (`.ckpt`: the method's trained state, its data from the
checkpoint) or one or more YAML configs merged in order as `lightning fit` composes them (e.g.
`--config configs/data/rotated_digits.yaml --config configs/method/zero_shot.yaml --config
configs/trainer/demo.yaml`; `seed_everything` seeds a random-init backbone as in `fit`).
For every (block, head) it measures, on a sample of the source domains' `out` splits (the
held-out domains only with `--held_out`; a checkpoint's own held-out domains, which `--data` or
`--set` could make source domains, are refused without it): the head's direct contribution to the image
embedding (TextSpan), its class relevance (zero-shot accuracy alone, accuracy lost when mean-
and when zero-ablated), its domain specificity (HAP's MMD between domains, a linear domain
probe), the method's own view (HAP's gates, AAT's mask and BP strengths, LoRA norms) and its
words (TextSpan's greedy basis over a text pool). It writes `atlas.html` (self-contained),
PNG heatmaps, `atlas.csv` and `atlas.json` into the run folder's `atlas/` (or `--out`), and the
heatmaps to TensorBoard. `--compare zero_shot` (the same backbone untrained) or another
checkpoint/config adds the difference of the two. Under `torchrun --nproc_per_node N -m
dg_heads atlas ...` each process takes a share of the images and the statistics are combined.
"""

from __future__ import annotations

import math
import os
import re
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
import yaml
from jsonargparse import ActionYesNo, ArgumentError, ArgumentParser
from jsonargparse.typing import NonNegativeInt, PositiveInt, restricted_number_type

from dg_heads import heads
from dg_heads.atlas import measures as M
from dg_heads.atlas import page, textspan
from dg_heads.atlas.decomposition import check_decomposable, decompose
from dg_heads.backbone import DEFAULT_TEMPLATES, image_size_of, resolve_templates
from dg_heads.config_files import inline_group_files
from dg_heads.errors import ConfigError, DGHeadsError
from dg_heads.leakage import held_out_domains
from dg_heads.methods.aat.scorer import MaskScorer, ScoringBatch


@dataclass
class Target:
    """A model to map: the LightningModule, where it came from, the data config it names."""

    module: torch.nn.Module
    label: str
    data: dict | None  # {"class_path": ..., "init_args": {...}} or None
    seed: int | None
    run_folder: Path | None
    held_out: tuple[str, list[str]] | None = None  # a checkpoint's (dataset, domains it held out in training)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_configs(paths: list[Path]) -> dict:
    merged: dict = {}
    for path in paths:
        if not path.is_file():
            raise DGHeadsError(f"config {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise DGHeadsError(f"config {path} is not YAML: {error}") from None
        if not isinstance(data, dict):
            raise DGHeadsError(f"config {path} must be a mapping of keys (model, data, ...), got {str(data)[:60]}")
        merged = _merge(merged, inline_group_files(data, path.parent))  # `clip: ../backbone/default.yaml`
    return merged


def instantiate(section: str, config: dict, source: str):
    """A `model` or `data` section (`class_path` + `init_args`) built as the Lightning CLI builds it."""
    import lightning as L

    from dg_heads.methods import DGModule

    base = {"model": DGModule, "data": L.LightningDataModule}[section]
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(base, section)
    try:
        namespace = parser.parse_object({section: config})
        built = parser.instantiate_classes(namespace)
    except DGHeadsError:
        raise
    except Exception as error:  # jsonargparse's own errors name the bad key
        detail = " ".join(line.strip() for line in str(error).splitlines() if line.strip())[:600]
        raise DGHeadsError(f"{source}: the `{section}` section: {detail}") from None
    return built[section]


def seed_all(seed: int | None) -> None:
    if seed is not None:
        from lightning.pytorch import seed_everything

        seed_everything(seed, verbose=False)


def load_target(paths: list[Path], sets: list[str] = ()) -> Target:
    """The model of a checkpoint or of merged YAML configs (`sets`: `--set` overrides of those)."""
    if len(paths) == 1 and paths[0].suffix == ".ckpt":
        if any(not item.startswith("data.") for item in sets):
            raise DGHeadsError(f"--set {[i for i in sets if not i.startswith('data.')]}: a checkpoint's model is "
                               f"fixed; only data.* keys may be set")
        from dg_heads.export_cli import load_module

        path = paths[0]
        with warnings.catch_warnings():  # by design a checkpoint holds no frozen backbone weights
            warnings.filterwarnings("ignore", message=".*in the model state dict but not in the checkpoint.*")
            module = load_module(path)
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        hp = checkpoint.get("datamodule_hyper_parameters")
        init_args = {k: v for k, v in (hp or {}).items() if not k.startswith("_")}  # not the CLI's `_instantiator`
        data = {"class_path": "dg_heads.data.DomainBedDataModule", "init_args": init_args} if init_args else None
        run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        return Target(module, f"{type(module).__name__} ({path.name})", data,
                      checkpoint.get("dg_heads", {}).get("seed"), run, held_out_domains(path))
    if any(p.suffix == ".ckpt" for p in paths):
        raise DGHeadsError(f"MODEL {[str(p) for p in paths]}: one checkpoint, or YAML configs, not both")
    config = parse_set(list(sets), read_configs(paths))
    source = " + ".join(str(p) for p in paths)
    if not isinstance(config.get("model"), dict):
        raise DGHeadsError(f"{source}: no `model` section (class_path and init_args)")
    seed = config.get("seed_everything")
    seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else None
    seed_all(seed)
    module = instantiate("model", config["model"], source)
    name = config["model"].get("class_path", "").rpartition(".")[2]
    mode = config["model"].get("init_args", {}).get("mode")
    return Target(module, f"{name}{f' ({mode})' if mode else ''}", config.get("data"), seed, None)


def zero_shot_of(target: Target) -> Target:
    """The same backbone with nothing trained (CLIPBaseline zero_shot, the same seed and spec)."""
    from dg_heads.methods import CLIPBaseline

    seed_all(target.seed)
    module = CLIPBaseline(clip=target.module.clip_spec, mode="zero_shot")
    return Target(module, "zero-shot CLIP (same backbone)", target.data, target.seed, None)


def parse_set(items: list[str], config: dict) -> dict:
    """`--set data.init_args.root=/data` overrides (values read as YAML)."""
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DGHeadsError(f"--set {item!r}: expected KEY=VALUE, e.g. data.init_args.test_domains=[75]")
        parts = key.split(".")
        node = config
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise DGHeadsError(f"--set {item!r}: {part} is not a section")
        node[parts[-1]] = yaml.safe_load(value)
    return config


# ------------------------------------------------------------------ measuring
class Indexed(torch.utils.data.Dataset):
    """Items `(image, label, id)` of chosen indices of a dataset (None for a skipped image)."""

    def __init__(self, dataset, indices: list[int], first_id: int) -> None:
        self.dataset, self.indices, self.first_id = dataset, indices, first_id

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        item = self.dataset[self.indices[i]]
        return None if item is None else (item[0], item[1], self.first_id + self.indices[i])


def domain_sets(datamodule, held_out: bool) -> list[tuple[str, object]]:
    sets = [(d, datamodule.val_sets[d]) for d in datamodule.source_domains]
    if held_out:
        sets += [(d, datamodule.test_sets[d]) for d in datamodule.test_domains]
    return sets


def domain_sample(size: int, count: int, seed: int) -> list[int]:
    """`count` of a domain split's `size` images, the same on every process: a seeded random sample
    in reading order. Not the first `count`: a held-out domain's split is in table order (sorted
    by class), so its first images are all of one class."""
    if count >= size:
        return list(range(size))
    return sorted(torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:count].tolist())


def measure(target: Target, datamodule, args: Options, device: torch.device) -> dict:
    """Every measure of every head of one model; the same dict on every process."""
    from dg_heads.data.table import collate_skipping

    started = time.perf_counter()
    module = target.module.to(device).eval()
    model = heads.convert(module.clip)
    if hasattr(module, "apply_mask"):  # AAT: the mask its validation and test use
        if getattr(module, "ablation_logits", None) is not None:
            module.mask = module.binarize()
        module.apply_mask()
    base_mask = heads.ablation_mask(model)
    aat_mode = getattr(getattr(module, "search_spec", None), "mode", "zero")
    if module.templates is None:  # a model that takes the data's prompts (as `DGModule.setup` resolves them)
        module.templates = resolve_templates(getattr(datamodule, "templates", None) or DEFAULT_TEMPLATES)
    classifier = module.classifier if module.classifier is not None else module.text_classifier(datamodule.class_names)
    text = F.normalize(classifier.detach().float().cpu(), dim=-1)
    autocast = ((lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.precision == "bf16-mixed"
                else nullcontext)
    rank, size = M.world()
    sets = domain_sets(datamodule, args.held_out)
    blocks, num_heads = heads.head_grid(model)
    scan_blocks = list(range(blocks))
    if args.ablation_blocks >= 0:
        scan_blocks = scan_blocks[max(0, blocks - args.ablation_blocks):] if args.ablation_blocks else []
    scorer = MaskScorer(model, lambda f: F.normalize(f.float(), dim=-1) @ text.to(f.device).T, mode=aat_mode,
                        alpha=getattr(getattr(module, "search_spec", None), "alpha", 0.0), num_domains=len(sets),
                        autocast=autocast, reduce=M.all_reduce_sum)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("contributions", "embedding", "labels", "domains",
                                                            "ids", "error")}
    set_up = time.perf_counter()  # the model on its device, converted, its class prompts encoded
    first_id = 0
    for index, (_, dataset) in enumerate(sets):
        count = min(len(dataset), args.images_per_domain)
        share = Indexed(dataset, domain_sample(len(dataset), count, index)[rank::size], first_id)
        first_id += count
        loader = torch.utils.data.DataLoader(share, batch_size=args.batch_size, num_workers=args.num_workers,
                                             collate_fn=collate_skipping)
        for images, labels, ids in loader:
            if not len(labels):
                continue
            images = module.prepare_images(images.to(device))
            keep = [] if scan_blocks and not base_mask else None
            parts_of = decompose(model, images, autocast(), block_inputs=keep)
            if scan_blocks:
                if keep is not None:  # the same forward's block inputs: no second pass
                    scorer.batches.append(ScoringBatch(index, labels.to(device), dict(enumerate(keep))))
                    scorer.block_forwards += len(labels) * blocks
                else:  # the method's own ablation is on: MaskScorer caches its inputs without it
                    scorer.add(images, labels.to(device), index)
                    heads.ablate(model, base_mask, aat_mode, scorer.alpha)
            parts["contributions"].append(parts_of.heads.cpu())
            parts["embedding"].append(parts_of.embedding.cpu())
            parts["error"].append((parts_of.total() - parts_of.embedding).abs().amax(-1).cpu())
            parts["labels"].append(labels.cpu())
            parts["domains"].append(torch.full_like(labels, index).cpu())
            parts["ids"].append(ids.cpu())
    empty = {"contributions": (0, blocks, num_heads, text.shape[1]), "embedding": (0, text.shape[1])}
    local = {k: (torch.cat(v) if v else torch.zeros(empty.get(k, (0,)), dtype=torch.long if k in
                                                      ("labels", "domains", "ids") else torch.float32))
             for k, v in parts.items()}
    whole = M.gather(local)
    if not len(whole["ids"]):
        raise DGHeadsError("no image to map: the chosen domains' splits are empty")
    sample = M.Sample(whole["contributions"], whole["embedding"], whole["labels"], whole["domains"], whole["ids"])
    decomposed = time.perf_counter()
    lost = None
    if scan_blocks:
        lost, _ = M.zero_ablation(scorer, base_mask, scan_blocks)
        heads.ablate(model, base_mask, aat_mode, scorer.alpha) if base_mask else heads.clear_ablation(model)
    scanned = time.perf_counter()
    num_domains = len(sets)
    result = {
        "measures": {
            "head_accuracy": M.head_accuracy(sample, text, num_domains),
            "mean_ablation": M.mean_ablation(sample, text, num_domains),
            **({"zero_ablation": lost} if lost is not None else {}),
            "domain_mmd": M.domain_mmd(sample, num_domains),
            "domain_probe": M.domain_probe(sample, num_domains),
            "contribution_norm": sample.contributions.norm(dim=-1).mean(0),
        },
        "base_accuracy": M.base_accuracy(sample, text, num_domains),
        "decomposition_error": float(whole["error"].max()),
        "images": len(sample.ids),
        "views": M.method_views(module),
    }
    measured = time.perf_counter()
    result["words"] = words(module, model, sample, datamodule, args)
    finished = time.perf_counter()
    local_images = sum(len(x) for x in parts["ids"])
    # the scorer's cache: from the decomposition's own pass, or (the method's ablation on) a pass of its own
    cache_pass = 1 if scan_blocks and base_mask else 0
    passes = 1 + (scorer.block_forwards - (0 if cache_pass else local_images * blocks * bool(scan_blocks))) \
        / max(1, local_images * blocks)
    result["cost"] = {
        "passes_over_data": passes,
        "passes": {"decomposition": 1 + cache_pass, "zero_ablation": passes - 1 - cache_pass},
        "seconds": {"setup": set_up - started, "decomposition": decomposed - set_up,
                    "zero_ablation": scanned - decomposed, "measures": measured - scanned,
                    "words": finished - measured, "total": finished - started},
    }
    return result


def words(module, model, sample: M.Sample, datamodule, args: Options) -> dict[str, dict[str, list]]:
    """TextSpan's basis of each head of the last `--words_blocks` blocks, per text pool."""
    blocks, num_heads = heads.head_grid(model)
    chosen = list(range(blocks))[max(0, blocks - args.words_blocks):] if args.words_blocks > 0 else []
    if not chosen:
        return {}
    pools = {"general" if args.text_pool is None else Path(args.text_pool).name:
             textspan.read_pool(args.text_pool or textspan.GENERAL_POOL),
             "class prompts": textspan.class_prompts(datamodule.class_names, module.templates)}
    contributions = sample.contributions[:, chosen].flatten(1, 2).transpose(0, 1)  # [K, N, D]
    out = {}
    for name, texts in pools.items():
        embedded = textspan.encode_texts(module.clip, module.tokenizer, texts)
        basis, shares = textspan.text_span(contributions, embedded, args.basis_size)
        out[name] = {f"{chosen[k // num_heads]},{k % num_heads}": [[texts[i], float(s)] for i, s in zip(row, share)]
                     for k, (row, share) in enumerate(zip(basis.tolist(), shares.tolist()))}
    return out


# ------------------------------------------------------------------ output
def as_lists(matrix: torch.Tensor) -> list[list[float | None]]:
    return [[None if not math.isfinite(v) else round(v, 6) for v in row] for row in matrix.float().tolist()]


def build_atlas(result: dict, meta: dict, grid: tuple[int, int], compare: dict | None, compare_label: str | None):
    atlas = {"meta": meta, "grid": list(grid), "base_accuracy": result["base_accuracy"],
             "decomposition_error": result["decomposition_error"], "cost": result["cost"],
             "measures": {k: as_lists(v) for k, v in result["measures"].items()},
             "views": {k: as_lists(v) for k, v in result["views"].items()}, "words": result["words"]}
    if compare is not None:
        shared = [k for k in result["measures"] if k in compare["measures"]]
        difference = {k: as_lists(result["measures"][k] - compare["measures"][k]) for k in shared}
        atlas["compare"] = {"model": compare_label, "base_accuracy": compare["base_accuracy"],
                            "measures": {k: as_lists(v) for k, v in compare["measures"].items()},
                            "views": {k: as_lists(v) for k, v in compare["views"].items()},
                            "words": compare["words"], "difference": difference,
                            "summary": compare_summary(result, compare, compare_label)}
    return atlas


def compare_summary(result: dict, compare: dict, label: str) -> str:
    """What the method turned down, and whether those were the domain-specific heads of the other model."""
    text = (f"Accuracy of the image embedding: {result['base_accuracy']:.3f} here, {compare['base_accuracy']:.3f} "
            f"for {label}. Difference maps are this model minus {label}.")
    suppressed = M.suppression(result["views"])
    if suppressed is None:
        return text + " This model has no gates or mask: no heads were turned down."
    name, values = suppressed
    mmd, probe = compare["measures"]["domain_mmd"], compare["measures"]["domain_probe"]
    order = torch.argsort(values.flatten(), descending=True)[:5].tolist()
    grid_heads = values.shape[1]
    mmd_rank = torch.argsort(torch.argsort(torch.nan_to_num(mmd.flatten(), nan=-1.0), descending=True))
    listed = ", ".join(f"block {i // grid_heads} head {i % grid_heads} ({name} {values.flatten()[i]:.2f}, "
                       f"domain-MMD rank {int(mmd_rank[i]) + 1} of {mmd.numel()})" for i in order)
    return (text + f" Most turned down ({name}): {listed}. Spearman correlation of {name} with the domain MMD of "
            f"{label}: {M.spearman(values, mmd):.2f}; with its domain probe accuracy: {M.spearman(values, probe):.2f} "
            f"(positive: the method turned down the domain-specific heads).")


def heatmaps(atlas: dict) -> list[dict]:
    domains = ", ".join(atlas["meta"]["domains"])
    caption = f"{atlas['meta']['dataset']}: {domains} ({atlas['meta']['split']})"
    maps = []
    for name, matrix in atlas["measures"].items():
        title, description = M.MEASURES[name]
        maps.append({"name": name, "section": "Measures", "title": title, "caption": caption,
                     "description": description, "matrix": matrix, "diverging": name.endswith("ablation")})
    for name, matrix in atlas["views"].items():
        title, description = M.METHOD_VIEWS[name]
        maps.append({"name": f"view_{name}", "section": "The method's own view", "title": title,
                     "caption": atlas["meta"]["model"], "description": description, "matrix": matrix,
                     "diverging": False})
    compare = atlas.get("compare")
    if compare:
        for name, matrix in compare["difference"].items():
            maps.append({"name": f"diff_{name}", "section": f"Difference: this model minus {compare['model']}",
                         "title": f"diff: {M.MEASURES[name][0]}", "caption": caption,
                         "description": f"{M.MEASURES[name][1]}; this model minus {compare['model']}",
                         "matrix": matrix, "diverging": True})
    return maps


def write_outputs(atlas: dict, out: Path, run_folder: Path | None, started: float | None = None,
                  measured: float | None = None) -> Path:
    """The page, PNGs, CSV and TensorBoard images, then atlas.json: its `cost` gets the seconds
    these took (`page`) and the command's whole wall time (`total`, from `started`)."""
    out.mkdir(parents=True, exist_ok=True)
    maps = heatmaps(atlas)
    images = {}
    for item in maps:
        image = page.png_heatmap(item["matrix"], item["title"], item["caption"], item["diverging"])
        image.save(out / f"{item['name']}.png")
        images[item["name"]] = image
    page.write_csv(atlas, out / "atlas.csv")
    path = out / "atlas.html"
    path.write_text(page.render_html(atlas, maps), encoding="utf-8")
    tensorboard(images, out, run_folder)
    if measured is not None:
        seconds = atlas["cost"]["seconds"]
        now = time.perf_counter()
        seconds["page"] = now - measured
        seconds["total"] = now - (started if started is not None else measured)
    page.write_json(atlas, out / "atlas.json")
    return path


def tensorboard(images: dict, out: Path, run_folder: Path | None) -> None:
    """The heatmaps in TensorBoard's image tab: in the run's own log folder if it has one."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: the PNGs are there
        return
    folder = run_folder if run_folder is not None and any(run_folder.glob("events.out.tfevents*")) else out
    writer = SummaryWriter(str(folder))
    try:
        for name, image in images.items():
            writer.add_image(f"atlas/{name}", page.chw(image), global_step=0)
    finally:
        writer.close()


# ------------------------------------------------------------------ entry
AblationBlocks = restricted_number_type("AblationBlocks", int, (">=", -1), docstring="an int >= -1")


@dataclass
class Options:
    """What `dg-heads atlas` is asked to do: its command line (`parser()` is built from these fields,
    their types and the help below).

    Args:
        compare: `zero_shot` (the same backbone untrained), another checkpoint, or a YAML config
        out: folder to write; default: the run folder's atlas/
        images_per_domain: a sample of each domain's split
        ablation_blocks: zero-ablate the heads of the last N blocks (-1: all; 0: none)
        words_blocks: TextSpan's words for the last N blocks (0: none)
        basis_size: texts per head (TextSpan's basis)
        text_pool: a file of descriptions, one a line (default: the shipped pool)
        batch_size: images per forward
        num_workers: DataLoader workers
        precision: the forward's precision (bf16-mixed: bf16 autocast; the terms are summed in fp32)
        accelerator: where to run (auto: CUDA if available)
    """

    # given by hand in `parser()` (argparse's positional list, repeated flags and a bare switch)
    model: list[Path] = field(default_factory=list)
    config: list[Path] = field(default_factory=list)
    data: list[Path] = field(default_factory=list)
    set: list[str] = field(default_factory=list)
    held_out: bool = False
    # the rest: jsonargparse reads them from the types and the docstring above
    compare: str | None = None
    out: Path | None = None
    images_per_domain: PositiveInt = 64
    ablation_blocks: AblationBlocks = -1
    words_blocks: NonNegativeInt = 4
    basis_size: PositiveInt = 5
    text_pool: str | None = None
    batch_size: PositiveInt = 32
    num_workers: NonNegativeInt = 0
    precision: Literal["32", "bf16-mixed"] = "32"
    accelerator: Literal["auto", "cpu", "cuda"] = "auto"


HAND_WRITTEN = ("model", "config", "data", "set", "held_out")


def parser() -> ArgumentParser:
    """jsonargparse's parser of `Options`. Not `jsonargparse.CLI`: CLI adds its own `--config` (a
    file of this command's options), and here `--config` is a model's YAML, as `lightning fit`
    takes it. Five arguments are added by hand to keep their documented spellings: MODEL is a
    positional list, `--config` / `--data` / `--set` repeat (jsonargparse's list options take
    `--set+ V` to append; a repeated `--set V` would replace), `--held_out` is a bare switch
    (jsonargparse's `ActionYesNo`; a typed bool wants `--held_out true`)."""
    p = ArgumentParser(prog="dg-heads atlas", description=__doc__.splitlines()[0], exit_on_error=False)
    p.add_argument("model", nargs="*", default=[],
                   help="a dg-heads checkpoint (.ckpt), or YAML configs merged in order")
    p.add_argument("--config", action="append", default=[],
                   help="a YAML config, as `lightning fit --config` takes it (repeatable; after MODEL's)")
    p.add_argument("--data", action="append", default=[],
                   help="YAML with a `data` section (e.g. configs/data/pacs.yaml); replaces MODEL's data (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. data.init_args.root=/data (repeatable)")
    p.add_argument("--held_out", action=ActionYesNo, default=False, help="also map the held-out (test) domains")
    p.add_class_arguments(Options, skip=set(HAND_WRITTEN), as_group=False)
    return p


def parse_args(argv: list[str]) -> Options:
    """The command line as `Options`; a mistake is one line (`ConfigError`, printed by `dg_heads.cli`)."""
    from dg_heads.cli_hints import suggest

    p = parser()
    try:
        namespace = p.parse_args(argv)
    except ArgumentError as error:
        text = str(error).strip()
        keyed = re.match(r'Parser key "([^"]+)":\s*(.*)', text, re.DOTALL)
        if keyed:  # 'Parser key "batch_size": Not of type PositiveInt: 0 does not conform to restriction v>0'
            text = f"--{keyed.group(1)}: {keyed.group(2)}"
        raise ConfigError(f"dg-heads atlas: {suggest(' '.join(text.split()), p)}") from None
    values = namespace.as_dict()
    for name in ("model", "config", "data"):
        values[name] = [Path(v) for v in values[name]]
    args = Options(**values)
    args.model = args.model + args.config
    check_args(args)
    return args


def check_args(args: Options) -> None:
    if not args.model:
        raise DGHeadsError("no model: pass a checkpoint (.ckpt) or YAML configs (positional or --config)")
    if args.text_pool is not None:
        textspan.read_pool(args.text_pool)  # a bad pool file fails before any model is built


def build_data(target: Target, args: Options):
    config = {"data": target.data} if target.data else {}
    if args.data:
        config = _merge(config, {"data": read_configs(args.data).get("data") or {}})
    config = parse_set([item for item in args.set if item.startswith("data.")], config)
    if not config.get("data"):
        raise DGHeadsError("no data: MODEL names none; pass --data configs/data/<dataset>.yaml")
    datamodule = instantiate("data", config["data"], "the data config")
    datamodule.prepare_data()
    datamodule.setup("validate")
    return datamodule


def setup_processes(accelerator: str) -> torch.device:
    import torch.distributed as dist

    cuda = accelerator == "cuda" or (accelerator == "auto" and torch.cuda.is_available())
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return device


def grid_of(target: Target) -> tuple[int, int]:
    """(blocks, heads) of a model's image tower, refused at once when the atlas cannot decompose it."""
    try:
        check_decomposable(target.module.clip)
    except DGHeadsError as error:
        raise DGHeadsError(f"{target.label}: {error}") from None
    return heads.head_grid(heads.convert(target.module.clip))


def check_grids(target: Target, other: Target | None, compare: str) -> tuple[int, int]:
    grid = grid_of(target)
    if other is not None and grid_of(other) != grid:
        theirs = grid_of(other)
        raise DGHeadsError(f"--compare {compare}: its image tower has {theirs[0]} blocks x {theirs[1]} heads, "
                           f"MODEL {target.label} has {grid[0]} blocks x {grid[1]} heads; the difference maps "
                           f"need the same grid (the same open_clip architecture)")
    return grid


def check_image_size(targets: list[Target], datamodule) -> None:
    """The data's images at the size each tower was built for (as `DGModule.setup` checks for fit)."""
    for target in targets:
        expected = image_size_of(target.module.clip)
        if getattr(datamodule, "image_size", expected) != expected:
            raise DGHeadsError(f"{target.label}: data.init_args.image_size is {datamodule.image_size} but "
                               f"{target.module.clip_spec.model_name} expects {expected}: pass --set "
                               f"data.init_args.image_size={expected}")


def check_leakage(models: list[tuple[str, Target]], datamodule, args: Options) -> list[str]:
    """A checkpoint's held-out domains are mapped only with `--held_out` (else: an error naming
    them); returns the notes the page shows for those mapped knowingly."""
    mapped = [d for d, _ in domain_sets(datamodule, args.held_out)]
    notes = []
    for flag, target in models:
        if target.held_out is None or getattr(datamodule, "hparams", {}).get("dataset") != target.held_out[0]:
            continue
        leaked = [d for d in mapped if d in target.held_out[1]]
        if not leaked:
            continue
        if not args.held_out:
            raise DGHeadsError(
                f"{flag}: the checkpoint held out {leaked} in training, and the data config maps "
                f"{'it' if len(leaked) == 1 else 'them'} as a source domain (mapped: {mapped}); its statistics "
                f"would then include the held-out domain. Set data.init_args.test_domains to hold "
                f"{'it' if len(leaked) == 1 else 'them'} out, or pass --held_out to map held-out domains on purpose")
        notes.append(f"{', '.join(leaked)} held out in training by {target.label}")
    return notes


def main(argv: list[str]) -> None:
    started = time.perf_counter()
    args = parse_args(argv)
    device = setup_processes(args.accelerator)
    target = load_target(args.model, args.set)
    other = None
    if args.compare is not None:
        other = zero_shot_of(target) if args.compare == "zero_shot" else load_target([Path(args.compare)])
    grid = check_grids(target, other, args.compare)
    datamodule = build_data(target, args)
    models = [("MODEL " + " ".join(str(p) for p in args.model), target)]
    models += [(f"--compare {args.compare}", other)] if other is not None else []
    check_image_size([target for _, target in models], datamodule)
    notes = check_leakage(models, datamodule, args)
    built = time.perf_counter()
    result = measure(target, datamodule, args, device)
    other_result = measure(other, datamodule, args, device) if other is not None else None
    measured = time.perf_counter()
    rank, size = M.world()
    sets = domain_sets(datamodule, args.held_out)
    split = "source domains' out splits" + (" and the held-out domains" if args.held_out else "")
    meta = {"model": target.label, "dataset": datamodule.info.name, "domains": [d for d, _ in sets],
            "split": split + (f" ({'; '.join(notes)})" if notes else ""),
            "images": result["images"], "images_per_domain": args.images_per_domain, "precision": args.precision,
            "processes": size, "source": [str(p) for p in args.model]}
    cost = result["cost"]
    seconds = cost["seconds"]
    seconds["setup"] += built - started  # reading the models and the data, before the first image
    if other_result is not None:
        seconds["compare"] = other_result["cost"]["seconds"]["total"]
        cost["compare_passes_over_data"] = other_result["cost"]["passes_over_data"]
    if rank == 0:
        atlas = build_atlas(result, meta, grid, other_result, other.label if other else None)
        default = (target.run_folder / "atlas") if target.run_folder else Path("runs") / meta["dataset"] / "atlas"
        out = args.out or default
        path = write_outputs(atlas, out, target.run_folder, started, measured)
        print(f"wrote {path} ({meta['images']} images, {cost['passes_over_data']:.1f} passes over them, "
              f"{seconds['total']:.1f} s) with PNGs, atlas.csv and atlas.json beside it")
    if size > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
