"""`dg-heads prepare` and `dg-heads splits`: get and check a benchmark, print its DomainBed splits.

Both also take a dataset of one's own: a DomainBed-layout folder (a name under `--root`, or a
path) or, with `--hf`, a Hugging Face dataset (any name), its domains and classes discovered."""

from __future__ import annotations

import sys
from json import dumps
from pathlib import Path

from dg_heads.data.captions import CaptionSource
from dg_heads.data.errors import DGHeadsError
from dg_heads.data.hf_source import HFSource
from dg_heads.data.registry import CAPTION_DATASETS, DATASETS

# (Lightning and torch are imported by the functions that read a dataset, not for `--help` or a bad option.)

DATASET_HELP = (f"one of {sorted(DATASETS)} or DomainBed's name; or your own: a folder "
                f"<domain>/<class>/<image> named under --root or given by its path, or any name with --hf; "
                f"or image-caption (retrieval) data: one of {sorted(CAPTION_DATASETS)}, or any name with --source")
SOURCE_HELP = ("image-caption data from a Hugging Face source, as RetrievalDataModule's `source` option (a YAML "
               "mapping of CaptionSource's fields, or a YAML file of one), e.g. "
               "'{name: owner/flickr30k, caption_column: sentences}', '{path: /data/saved}', "
               "'{data_files: [/data/test.tar]}' or '{name: /data/my_captions}' (an imagefolder with metadata.jsonl)")
HF_HELP = ("a Hugging Face source instead of the folder, as the DataModule's `hf` option (a YAML mapping of "
           "HFSource's fields, or a YAML file of one), e.g. "
           "'{name: owner/pacs, domain_column: style, id_column: path}' or '{path: /data/saved}'")
ROOT_HELP = "data root (default $DG_HEADS_DATA)"


def prepare(dataset: str, *, root: Path | None = None, hf: HFSource | None = None, json: bool = False,
            source: CaptionSource | None = None, split: list[str] | None = None, cache_dir: str | None = None
            ) -> None:
    """Download a benchmark where a stable source exists (else print the manual steps), then verify
    the copy against the registry: domains, classes, images per domain and class. For a dataset of
    your own: print the domains, classes and images per domain and class it holds, and what is wrong
    with it. Image-caption data (retrieval): load every split through Hugging Face datasets
    (downloading into its cache what it lacks, unless offline) and print the images and captions of
    each. Exit 0: usable, 1: problems listed.

    Args:
        dataset: {DATASET_HELP}
        root: {ROOT_HELP}
        hf: {HF_HELP}
        json: print the report, with per-class counts, as JSON
        source: {SOURCE_HELP}
        split: image-caption data: a split to fetch and check (repeatable; default train, val, test)
        cache_dir: image-caption data: the datasets cache (default $HF_DATASETS_CACHE)
    """
    say = (lambda line: print(line, file=sys.stderr)) if json else print
    if source is not None or dataset in CAPTION_DATASETS:
        captions(dataset, source, split, cache_dir, json, say)
        return
    from dg_heads.data.domainbed import default_root
    from dg_heads.data.own import resolve_dataset
    from dg_heads.data.prepare import prepare as prepare_copy

    root = root or default_root()
    info = resolve_dataset(dataset, root, hf is not None)
    report = prepare_copy(info, root, say, hf)
    if not report.ok and report.found is not None and hf is None:
        marker = caption_marker(Path(report.folder))
        if marker is not None:  # image-caption data read as a DG folder: say how it is read instead
            report.problems.insert(0, f"{report.folder} holds {marker}: image-caption (retrieval) data? Check it with "
                                   f"`dg-heads prepare {dataset} --source '{{name: {report.folder}}}'`")
    if json:
        found = {} if report.found is None else {"domains": report.found.domains,
                                                  "classes": report.found.class_order}
        print(dumps({"ok": report.ok, "problems": report.problems, "notes": report.notes,
                     **found, "counts": report.counts}, indent=1))
    else:
        print("\n".join(report.lines()))
    sys.exit(0 if report.ok else 1)


CAPTION_FILES = ("metadata.jsonl", "metadata.csv", "metadata.parquet", "dataset_info.json", "state.json")
CAPTION_SUFFIXES = (".parquet", ".tar")


def caption_marker(folder: Path) -> str | None:
    """A file that says `folder` holds image-caption data as `datasets` reads it (an imagefolder's
    metadata, a `save_to_disk` copy, parquet or webdataset shards), in it or one level down; else None."""
    if not folder.is_dir():
        return None
    for place in (folder, *sorted(p for p in folder.iterdir() if p.is_dir())):
        for path in sorted(place.iterdir()):
            if path.is_file() and (path.name in CAPTION_FILES or path.suffix in CAPTION_SUFFIXES):
                return str(path.relative_to(folder))
    return None


def captions(dataset: str, source: CaptionSource | None, splits: list[str] | None, cache_dir: str | None,
             json: bool, say) -> None:
    """`dg-heads prepare` for image-caption data: fetch into the datasets cache, print what each split holds."""
    from dg_heads.data.prepare import prepare_captions

    report = prepare_captions(dataset, source, splits, cache_dir, say)
    if json:
        print(dumps({"ok": report.ok, "problems": report.problems, "notes": report.notes,
                     "splits": report.splits}, indent=1))
    else:
        print("\n".join(report.lines()))
    sys.exit(0 if report.ok else 1)


def splits(*, dataset: str, root: Path | None = None, trial_seed: int = 0, holdout_fraction: float = 0.2,
           hf: HFSource | None = None) -> None:
    """Print, as JSON, every domain's DomainBed `in` and `out` samples (relative paths); each run
    writes the same into splits.json in its folder.

    Args:
        dataset: {DATASET_HELP}
        root: {ROOT_HELP}
        trial_seed: DomainBed's trial seed: which samples of each domain are held out as `out`
        holdout_fraction: the fraction of each domain held out as `out`
        hf: {HF_HELP}
    """
    from dg_heads.data.domainbed import default_root, load_table, split_manifest
    from dg_heads.data.own import resolve_dataset

    if not 0.0 < holdout_fraction < 1.0:  # as the DataModule refuses it
        raise DGHeadsError(f"--holdout_fraction must be in (0, 1), got {holdout_fraction}")
    root = root or default_root()
    info = resolve_dataset(dataset, root, hf is not None)
    table = load_table(info, root, hf)
    print(dumps({
        "dataset": info.name, "trial_seed": trial_seed, "holdout_fraction": holdout_fraction,
        "domains": split_manifest(table, trial_seed, holdout_fraction),
    }))


# the help's dataset lists come from the registry (jsonargparse reads the help from `__doc__`)
HELP = {"DATASET_HELP": DATASET_HELP, "ROOT_HELP": ROOT_HELP, "HF_HELP": HF_HELP, "SOURCE_HELP": SOURCE_HELP}
for _command in (prepare, splits):
    _command.__doc__ = _command.__doc__ and _command.__doc__.format(**HELP)  # (None under python -OO)


def prepare_main(argv: list[str]) -> None:
    """`dg-heads prepare ARGS`."""
    from dg_heads.cli import run_tool

    run_tool(prepare, argv, "dg-heads prepare")


def splits_main(argv: list[str]) -> None:
    """`dg-heads splits ARGS`."""
    from dg_heads.cli import run_tool

    run_tool(splits, argv, "dg-heads splits")
