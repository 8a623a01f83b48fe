"""The five benchmarks at full fidelity: the registry (DomainBed's layout and names, in any case), a fake copy
of each loaded in DomainBed's order, and its split manifest equal to DomainBed's split."""

import json
import os

import pytest

from dg_heads.data import DomainBedDataModule
from dg_heads.data.prepare import verify_copy
from dg_heads.data.registry import DATASETS, get_dataset
from dg_heads.data_cli import splits_main
from dg_heads.errors import DGHeadsError
from tests.conftest import REPO, make_benchmark

BENCHMARKS = ["pacs", "vlcs", "office_home", "terra_incognita", "domain_net"]
PROMPTS = {"pacs": ("elephant", "elephant"), "vlcs": ("chair", "chair"), "office_home": ("Alarm_Clock", "alarm clock"),
           "terra_incognita": ("empty", "empty scene"), "domain_net": ("The_Eiffel_Tower", "Eiffel Tower")}


def test_registry_matches_domainbeds_layout():
    sizes = {"pacs": (4, 7), "vlcs": (4, 5), "office_home": (4, 65), "terra_incognita": (4, 10), "domain_net": (6, 345)}
    for name, (n_domains, n_classes) in sizes.items():
        info = get_dataset(name)
        assert len(info.domains) == n_domains and info.num_classes == n_classes
        assert list(info.domains) == sorted(info.domains) and list(info.classes) == sorted(info.classes)
        assert set(info.counts) == set(info.domains) and all(v > 0 for v in info.counts.values())
    assert sum(DATASETS["pacs"].counts.values()) == 9991 and sum(DATASETS["office_home"].counts.values()) == 15588
    assert sum(DATASETS["domain_net"].counts.values()) == 586575 and sum(DATASETS["vlcs"].counts.values()) == 10729
    for info in DATASETS.values():  # per-class counts, where tabulated, add up to the per-domain ones
        for domain, per_class in info.class_counts.items():
            assert list(per_class) == list(info.classes) and sum(per_class.values()) == info.counts[domain], domain
    assert {n for n, info in DATASETS.items() if info.class_counts} == {"pacs", "vlcs"}


@pytest.mark.parametrize("name", BENCHMARKS)
def test_fake_copy_of_each_benchmark_loads_in_domainbed_order(name, tmp_path):
    info = get_dataset(name)
    make_benchmark(tmp_path, name, per_class=1, size=4)
    test_domain = info.domains[-1]
    dm = DomainBedDataModule(name, [test_domain], root=str(tmp_path), image_size=16, num_workers=0)
    dm.setup("fit")
    folder, words = PROMPTS[name]
    assert dm.class_names[info.classes.index(folder)] == words
    assert dm.source_domains == list(info.domains[:-1]) and dm.test_domains == [test_domain]
    # DomainBed's order: domains sorted; in a domain, class folders sorted, files sorted (ImageFolder)
    expected = [f"{d}/{c}/000.png" for d in info.domains for c in sorted(os.listdir(tmp_path / info.folder / d))]
    assert dm.table.ids.to_pylist() == expected
    report = verify_copy(info, tmp_path / info.folder)  # a fake copy: every domain short of the registry's count
    totals = [p for p in report.problems if "/" not in p.split(":")[0]]
    assert len(totals) == len(info.domains) and f"expected {info.counts[test_domain]}" in totals[-1]


# DomainBed's own split of a 15-image domain (trial_seed 2, holdout_fraction 0.3: int(4.5) = 4 held out),
# env_i -> (in_.keys, out.keys): computed once with facebookresearch/DomainBed b93c22a1's `misc.split_dataset`
# and `misc.seed_hash(trial_seed, env_i)`, called as `domainbed/scripts/train.py` does, and written here.
DOMAINBED_VLCS_SPLIT = {
    0: ([1, 12, 9, 8, 3, 4, 5, 6, 10, 7, 0], [11, 14, 2, 13]),
    1: ([14, 8, 5, 2, 13, 12, 3, 9, 0, 4, 10], [7, 6, 1, 11]),
    2: ([6, 12, 1, 0, 11, 2, 8, 4, 7, 13, 10], [3, 9, 14, 5]),
    3: ([3, 10, 0, 14, 2, 11, 9, 4, 7, 12, 1], [5, 13, 6, 8]),
}


def test_split_manifest_is_domainbeds_split_and_matches_the_splits_command(tmp_path, capsys):
    make_benchmark(tmp_path, "vlcs", per_class=3, size=4)  # 5 classes x 3 images per domain
    splits_main(["--root", str(tmp_path), "--dataset", "vlcs", "--trial-seed", "2", "--holdout-fraction", "0.3"])
    printed = json.loads(capsys.readouterr().out)
    dm = DomainBedDataModule("vlcs", ["SUN09"], root=str(tmp_path), trial_seed=2, holdout_fraction=0.3)
    dm.setup("fit")
    assert dm.split_manifest["domains"] == printed["domains"]
    for env_index, domain in enumerate(["Caltech101", "LabelMe", "SUN09", "VOC2007"]):
        # DomainBed's sample order in a domain (ImageFolder): class folders sorted, then files sorted
        files = [f"{domain}/{c}/{i:03d}.png" for c in ["bird", "car", "chair", "dog", "person"] for i in range(3)]
        in_idx, out_idx = DOMAINBED_VLCS_SPLIT[env_index]
        assert printed["domains"][domain] == {"in": [files[i] for i in in_idx], "out": [files[i] for i in out_idx]}


# ----------------------------------------------------------------- Hugging Face sources


# ----------------------------------------------------------------------------- prepare


# ------------------------------------------------------------- DomainBed's dataset names
DOMAINBED_NAMES = {"PACS": "pacs", "VLCS": "vlcs", "OfficeHome": "office_home", "TerraIncognita": "terra_incognita",
                   "DomainNet": "domain_net"}


@pytest.mark.parametrize("given", [*DOMAINBED_NAMES, "officehome", "OFFICE_HOME", "Terra_Incognita", "domainnet",
                                   "Domain-Net", "pacs", "rotateddigits", "RotatedDigits"])
def test_domainbed_names_in_any_case_are_the_registrys(given, tmp_path):
    from dg_heads.data.own import resolve_dataset
    from dg_heads.data.registry import dataset_name

    expected = DOMAINBED_NAMES.get(given) or {"officehome": "office_home", "OFFICE_HOME": "office_home",
                                              "Terra_Incognita": "terra_incognita", "domainnet": "domain_net",
                                              "Domain-Net": "domain_net", "pacs": "pacs"}.get(given, "rotated_digits")
    assert dataset_name(given) == expected and get_dataset(given).name == expected
    assert resolve_dataset(given, tmp_path).name == expected  # `dg-heads prepare` / `splits --dataset`
    dm = DomainBedDataModule(given, [get_dataset(expected).domains[0]], root=str(tmp_path))  # CLI and YAML
    assert dm.info.name == expected and dm.hparams["dataset"] == expected


def test_a_sweep_spec_may_name_datasets_as_domainbed(tmp_path):
    from dg_heads.sweep import jobs_of, load_spec

    spec = tmp_path / "spec.yaml"
    spec.write_text("methods:\n  lora: ['configs/data/{dataset}.yaml']\ndatasets:\n  OfficeHome: [Art]\n  PACS: all\n"
                    "slurm: {gpus_per_node: 1}\n")
    loaded = load_spec(spec)
    assert loaded.datasets == {"office_home": ["Art"], "pacs": ["art_painting", "cartoon", "photo", "sketch"]}
    here = os.getcwd()
    try:
        os.chdir(REPO)
        jobs = jobs_of(loaded, tmp_path / "runs")
    finally:
        os.chdir(here)
    assert {j.configs[0] for j in jobs} == {"configs/data/office_home.yaml", "configs/data/pacs.yaml"}
    spec.write_text("methods:\n  lora: [x.yaml]\ndatasets:\n  PACS: all\n  pacs: all\n")
    with pytest.raises(DGHeadsError, match="names pacs twice"):
        load_spec(spec)


def test_an_unknown_dataset_name_lists_the_known_ones():
    expected = r"unknown dataset 'PACSS'; expected one of \['domain_net'.* \(or DomainBed's PACS, VLCS, OfficeHome"
    with pytest.raises(DGHeadsError, match=expected):
        get_dataset("PACSS")
