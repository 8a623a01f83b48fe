"""The five benchmarks at full fidelity: registry, DomainBed order and splits, HF sources, prepare."""

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from data_modules import DomainBedDataModule
from data_modules.hf_source import HFSource
from data_modules.prepare import prepare, verify_copy
from data_modules.registry import DATASETS, Archive, get_dataset
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
def _hf_copy(folder_root: Path, out: Path, with_domain: bool = True):
    """The fake PACS copy as a HF dataset: images as bytes, labels a ClassLabel in another order,
    domains spelled differently, relative paths as ids."""
    import datasets

    info = get_dataset("pacs")
    shuffled_names = list(reversed(info.classes))
    rows = {"image": [], "label": [], "domain": [], "path": []}
    for domain in info.domains:
        for cls in info.classes:
            for f in sorted((folder_root / "PACS" / domain / cls).iterdir()):
                rows["image"].append({"bytes": f.read_bytes(), "path": None})
                rows["label"].append(shuffled_names.index(cls))
                rows["domain"].append(domain.replace("_", " ").title())
                rows["path"].append(f"{domain}/{cls}/{f.name}")
    if not with_domain:
        del rows["domain"]
    features = {"image": datasets.Image(), "label": datasets.ClassLabel(names=shuffled_names),
                "path": datasets.Value("string")}
    if with_domain:
        features["domain"] = datasets.Value("string")
    order = np.random.default_rng(0).permutation(len(rows["path"]))  # rows in no particular order
    ds = datasets.Dataset.from_dict({k: [v[i] for i in order] for k, v in rows.items()},
                                    features=datasets.Features(features))
    ds.save_to_disk(str(out / "saved"))
    (out / "parquet").mkdir(parents=True)
    ds.to_parquet(str(out / "parquet" / "train-00000.parquet"))
    return out


def _same_table(a: DomainBedDataModule, b: DomainBedDataModule) -> None:
    assert a.table.ids.to_pylist() == b.table.ids.to_pylist()
    assert np.array_equal(a.table.labels, b.table.labels) and np.array_equal(a.table.domain_of, b.table.domain_of)
    assert a.split_manifest["domains"] == b.split_manifest["domains"]
    for index in range(len(a.test_domains)):
        xa, ya = next(iter(a.test_dataloader()[index]))
        xb, yb = next(iter(b.test_dataloader()[index]))
        assert np.array_equal(ya, yb) and np.allclose(xa, xb)


def test_hf_saved_parquet_and_by_name_give_the_folders_table(tmp_path, capsys):
    make_benchmark(tmp_path, "pacs", per_class=2, size=8)
    hf = _hf_copy(tmp_path, tmp_path / "hf")

    def module(**source):
        dm = DomainBedDataModule("pacs", ["sketch"], root=str(tmp_path), image_size=16, num_workers=0,
                                 hf=None if not source else HFSource(id_column="path", **source))
        dm.setup("fit")
        return dm

    folder = module()
    _same_table(folder, module(path=str(hf / "saved")))
    _same_table(folder, module(data_files=[str(hf / "parquet" / "*.parquet")]))
    _same_table(folder, module(name=str(hf / "parquet")))  # load_dataset(name): a hub name or a data folder
    splits_main(["--dataset", "pacs", "--hf", f"{{path: {hf / 'saved'}, id_column: path}}"])
    assert json.loads(capsys.readouterr().out)["domains"] == folder.split_manifest["domains"]
    with pytest.raises(SystemExit):
        splits_main(["--dataset", "pacs", "--hf", "{name: x, domain: style}"])
    assert "unknown key(s) ['domain']" in capsys.readouterr().err


def test_hf_dataset_without_a_domain_column_is_named(tmp_path):
    make_benchmark(tmp_path, "pacs", per_class=1, size=4)
    hf = _hf_copy(tmp_path, tmp_path / "hf", with_domain=False)
    dm = DomainBedDataModule("pacs", ["sketch"], root=str(tmp_path), hf=HFSource(name=str(hf / "parquet")))
    with pytest.raises(DGHeadsError, match=r"has no domain column 'domain'; its columns are \['image', 'label', "
                                           r"'path'\]: set data.hf.domain_column"):
        dm.setup("fit")


def test_unreachable_hub_dataset_is_one_clear_error(tmp_path):
    dm = DomainBedDataModule("pacs", ["sketch"], hf=HFSource(name="no-such-owner/no-such-dataset"))
    with pytest.raises(DGHeadsError, match="cannot load Hugging Face dataset no-such-owner/no-such-dataset"):
        dm.setup("fit")


# ----------------------------------------------------------------------------- prepare
def test_prepare_verifies_the_builtin_dataset_complete(data_root):
    report = prepare(get_dataset("rotated_digits"), data_root, say=lambda _: None)
    assert report.ok and report.counts["75"]["seven"] > 0 and sum(report.counts["0"].values()) == 1797


def test_prepare_says_what_is_missing_or_extra(tmp_path):
    make_benchmark(tmp_path, "pacs", per_class=1, size=4, domains=["art_painting", "cartoon", "photo"])
    (tmp_path / "PACS/photo/unicorn").mkdir()
    (tmp_path / "PACS/__MACOSX").mkdir()
    lines = []
    report = prepare(get_dataset("pacs"), tmp_path, say=lines.append)
    text = "\n".join(report.problems + report.notes)
    assert "missing domain folder(s) ['sketch']" in text and "photo: extra class folder(s) ['unicorn']" in text
    assert "extra folder(s) ['__MACOSX']" in text and "art_painting: 7 images, expected 2048 (2041 missing)" in text
    assert lines == []  # a copy exists: no download, no manual steps


def test_prepare_finds_a_misfiled_image_by_its_class_counts(tmp_path):
    """An image moved to the wrong class keeps the domain's total: only per-class counts see it."""
    pacs = get_dataset("pacs")
    copy = make_benchmark(tmp_path, "pacs", per_class=2, size=4)
    as_made = {d: {c: 2 for c in pacs.classes} for d in pacs.domains}
    info = type(pacs)(**{**pacs.__dict__, "counts": {d: 2 * pacs.num_classes for d in pacs.domains},
                         "class_counts": as_made})
    assert verify_copy(info, copy).ok
    (copy / "sketch/dog/000.png").rename(copy / "sketch/horse/misfiled.png")
    report = verify_copy(info, copy)
    assert report.problems == ["sketch/dog: 1 images, expected 2", "sketch/horse: 3 images, expected 2"]


def _zip_of_domain(tmp_path: Path) -> tuple[Path, str]:
    src = make_benchmark(tmp_path / "src", "pacs", per_class=1, size=4, domains=["photo"])
    archive = tmp_path / "photo.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted((src / "photo").rglob("*.png")):
            z.write(f, f.relative_to(src))
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest()


def test_prepare_downloads_checks_the_checksum_and_unpacks(tmp_path, monkeypatch):
    archive, digest = _zip_of_domain(tmp_path)
    info = get_dataset("pacs")
    good = type(info)(**{**info.__dict__, "archives": (Archive(archive.as_uri(), digest, provides="photo"),)})
    report = prepare(good, tmp_path / "root", say=lambda _: None)
    assert (tmp_path / "root/PACS/photo/dog/000.png").exists()
    assert "missing domain folder(s) ['art_painting', 'cartoon', 'sketch']" in report.problems[0]

    bad = type(info)(**{**info.__dict__, "archives": (Archive(archive.as_uri(), "0" * 64, provides="photo"),)})
    with pytest.raises(DGHeadsError, match=r"sha256 .* != expected 0000.*nothing was unpacked"):
        prepare(bad, tmp_path / "other", say=lambda _: None)
    assert not (tmp_path / "other/PACS/photo").exists()


# ------------------------------------------------------------- DomainBed's dataset names
DOMAINBED_NAMES = {"PACS": "pacs", "VLCS": "vlcs", "OfficeHome": "office_home", "TerraIncognita": "terra_incognita",
                   "DomainNet": "domain_net"}


@pytest.mark.parametrize("given", [*DOMAINBED_NAMES, "officehome", "OFFICE_HOME", "Terra_Incognita", "domainnet",
                                   "Domain-Net", "pacs", "rotateddigits", "RotatedDigits"])
def test_domainbed_names_in_any_case_are_the_registrys(given, tmp_path):
    from data_modules.own import resolve_dataset
    from data_modules.registry import dataset_name

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
