"""`dg-heads prepare` and `dg-heads splits`: get and check a benchmark, print its DomainBed splits."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import yaml

from data_modules.domainbed import default_root, load_table, split_manifest
from data_modules.hf_source import HFSource
from data_modules.prepare import prepare
from data_modules.registry import DATASETS, dataset_name, get_dataset
from dg_heads.errors import DGHeadsError


def dataset_arg(text: str) -> str:
    """A dataset named as dg-heads or DomainBed does, in any case (`OfficeHome`, `office_home`)."""
    try:
        return dataset_name(text)
    except DGHeadsError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def prepare_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="dg-heads prepare",
        description="Download a benchmark where a stable source exists (else print the manual steps), "
                    "then verify the copy against the registry: domains, classes, images per domain and class.")
    parser.add_argument("dataset", type=dataset_arg, help=f"one of {sorted(DATASETS)} or DomainBed's name")
    parser.add_argument("--root", type=Path, default=None, help="data root (default $DG_HEADS_DATA)")
    parser.add_argument("--json", action="store_true", help="print the report, with per-class counts, as JSON")
    args = parser.parse_args(argv)
    say = (lambda line: print(line, file=sys.stderr)) if args.json else print
    report = prepare(get_dataset(args.dataset), args.root or default_root(), say)
    if args.json:
        print(json.dumps({"ok": report.ok, "problems": report.problems, "notes": report.notes,
                          "counts": report.counts}, indent=1))
    else:
        print("\n".join(report.lines()))
    sys.exit(0 if report.ok else 1)


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
    parser.add_argument("--dataset", required=True, type=dataset_arg, help=f"one of {sorted(DATASETS)} or DomainBed's name")
    parser.add_argument("--trial-seed", type=int, default=0)
    parser.add_argument("--holdout-fraction", type=float, default=0.2)
    parser.add_argument("--hf", type=hf_source, default=None, metavar="YAML",
                        help="a Hugging Face source instead of the folder, as the DataModule's `hf` "
                             "option, e.g. '{name: owner/pacs, domain_column: style, id_column: path}'")
    args = parser.parse_args(argv)
    info = get_dataset(args.dataset)
    table = load_table(info, args.root or default_root(), args.hf)
    print(json.dumps({
        "dataset": info.name, "trial_seed": args.trial_seed, "holdout_fraction": args.holdout_fraction,
        "domains": split_manifest(table, args.trial_seed, args.holdout_fraction),
    }))
