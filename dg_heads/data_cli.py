"""`dg-heads prepare` and `dg-heads splits`: get and check a benchmark, print its DomainBed splits.

Both also take a dataset of one's own: a DomainBed-layout folder (a name under `--root`, or a
path) or, with `--hf`, a Hugging Face dataset (any name), its domains and classes discovered."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import yaml

from dg_heads.data.domainbed import default_root, load_table, split_manifest
from dg_heads.data.hf_source import HFSource
from dg_heads.data.own import resolve_dataset
from dg_heads.data.prepare import prepare, prepare_captions
from dg_heads.data.registry import CAPTION_DATASETS, DATASETS

DATASET_HELP = (f"one of {sorted(DATASETS)} or DomainBed's name; or your own: a folder "
                f"<domain>/<class>/<image> named under --root or given by its path, or any name with --hf; "
                f"or image-caption (retrieval) data: one of {sorted(CAPTION_DATASETS)}, or any name with --source")
SOURCE_HELP = ("image-caption data from a Hugging Face source, as RetrievalDataModule's `source` option, e.g. "
               "'{name: owner/flickr30k, caption_column: sentences}', '{path: /data/saved}', "
               "'{data_files: [/data/test.tar]}' or '{name: /data/my_captions}' (an imagefolder with metadata.jsonl)")
HF_HELP = ("a Hugging Face source instead of the folder, as the DataModule's `hf` option, e.g. "
           "'{name: owner/pacs, domain_column: style, id_column: path}' or '{path: /data/saved}'")


def prepare_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="dg-heads prepare",
        description="Download a benchmark where a stable source exists (else print the manual steps), "
                    "then verify the copy against the registry: domains, classes, images per domain and class. "
                    "For a dataset of your own: print the domains, classes and images per domain and class "
                    "it holds, and what is wrong with it. Image-caption data (retrieval): load every split through "
                    "Hugging Face datasets (downloading into its cache what it lacks, unless offline) and print "
                    "the images and captions of each. Exit 0: usable, 1: problems listed.")
    parser.add_argument("dataset", help=DATASET_HELP)
    parser.add_argument("--root", type=Path, default=None, help="data root (default $DG_HEADS_DATA)")
    parser.add_argument("--hf", type=hf_source, default=None, metavar="YAML", help=HF_HELP)
    parser.add_argument("--json", action="store_true", help="print the report, with per-class counts, as JSON")
    parser.add_argument("--source", type=caption_source, default=None, metavar="YAML", help=SOURCE_HELP)
    parser.add_argument("--split", action="append", default=None,
                        help="image-caption data: a split to fetch and check (repeatable; default train, val, test)")
    parser.add_argument("--cache-dir", default=None,
                        help="image-caption data: the datasets cache (default $HF_DATASETS_CACHE)")
    args = parser.parse_args(argv)
    say = (lambda line: print(line, file=sys.stderr)) if args.json else print
    if args.source is not None or args.dataset in CAPTION_DATASETS:
        captions_main(args, say)
        return
    root = args.root or default_root()
    info = resolve_dataset(args.dataset, root, args.hf is not None)
    report = prepare(info, root, say, args.hf)
    if args.json:
        found = {} if report.found is None else {"domains": report.found.domains,
                                                  "classes": report.found.class_order}
        print(json.dumps({"ok": report.ok, "problems": report.problems, "notes": report.notes,
                          **found, "counts": report.counts}, indent=1))
    else:
        print("\n".join(report.lines()))
    sys.exit(0 if report.ok else 1)


def captions_main(args, say) -> None:
    """`dg-heads prepare` for image-caption data: fetch into the datasets cache, print what each split holds."""
    report = prepare_captions(args.dataset, args.source, args.split, args.cache_dir, say)
    if args.json:
        print(json.dumps({"ok": report.ok, "problems": report.problems, "notes": report.notes,
                          "splits": report.splits}, indent=1))
    else:
        print("\n".join(report.lines()))
    sys.exit(0 if report.ok else 1)


def caption_source(text: str) -> dict:
    """`--source '{name: ..., caption_column: ...}'`: the fields of `CaptionSource`, checked by name."""
    from dg_heads.data.captions import CaptionSource

    fields = _yaml_mapping(text)
    known = {f.name for f in dataclasses.fields(CaptionSource)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown key(s) {unknown}; expected some of {sorted(known)}")
    return fields


def _yaml_mapping(text: str) -> dict:
    try:
        fields = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise argparse.ArgumentTypeError(f"not YAML: {error}") from None
    if not isinstance(fields, dict):
        raise argparse.ArgumentTypeError(f"expected a mapping such as '{{name: owner/dataset}}', got {text!r}")
    return fields


def hf_source(text: str) -> HFSource:
    """`--hf '{name: ..., domain_column: ...}'`: the fields of `HFSource`, checked by name."""
    try:
        fields = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise argparse.ArgumentTypeError(f"not YAML: {error}") from None
    if not isinstance(fields, dict):
        raise argparse.ArgumentTypeError(f"expected a mapping such as '{{name: owner/dataset}}', got {text!r}")
    known = {f.name for f in dataclasses.fields(HFSource)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown key(s) {unknown}; expected some of {sorted(known)}")
    return HFSource(**fields)


def splits_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="dg-heads splits",
        description="Print, as JSON, every domain's DomainBed `in` and `out` samples (relative paths); "
                    "each run writes the same into splits.json in its folder.")
    parser.add_argument("--root", type=Path, default=None, help="data root (default $DG_HEADS_DATA)")
    parser.add_argument("--dataset", required=True, help=DATASET_HELP)
    parser.add_argument("--trial-seed", type=int, default=0)
    parser.add_argument("--holdout-fraction", type=float, default=0.2)
    parser.add_argument("--hf", type=hf_source, default=None, metavar="YAML", help=HF_HELP)
    args = parser.parse_args(argv)
    root = args.root or default_root()
    info = resolve_dataset(args.dataset, root, args.hf is not None)
    table = load_table(info, root, args.hf)
    print(json.dumps({
        "dataset": info.name, "trial_seed": args.trial_seed, "holdout_fraction": args.holdout_fraction,
        "domains": split_manifest(table, args.trial_seed, args.holdout_fraction),
    }))
