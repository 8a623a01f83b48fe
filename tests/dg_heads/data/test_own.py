"""A dataset of one's own, not in the registry, with no code: a DomainBed-layout folder or a
Hugging Face dataset (saved, parquet) built here; its domains and classes discovered, then split,
trained and reported as a registered benchmark; bad ones end as one `error:` line."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from dg_heads.data import DomainBedDataModule
from dg_heads.data.hf_source import HFSource
from dg_heads.data.splits import holdout_split
from dg_heads.errors import DGHeadsError
from tests.conftest import QUICK, REPO, demo_configs, make_benchmark, make_domainbed, run_cli, run_main

CAMS = {"cam_b": ["Desk_Lamp", "cat"], "cam_a": ["Desk_Lamp", "cat"], "cam_c": ["Desk_Lamp", "cat"]}


def _cams(root: Path, per_class: int = 4, **overrides) -> Path:
    return make_domainbed(root, "my_cams", {**CAMS, **overrides}, per_class=per_class, size=8)


def _listing(folder: Path) -> dict[str, list[str]]:
    """Each domain's files in ImageFolder order, by reading the disk (not through dg-heads)."""
    return {d: [f"{d}/{c}/{f}" for c in sorted(os.listdir(folder / d)) for f in sorted(os.listdir(folder / d / c))]
            for d in sorted(os.listdir(folder))}


def test_a_folder_not_in_the_registry_is_discovered_as_domainbed_does(tmp_path):
    folder = _cams(tmp_path)
    dm = DomainBedDataModule("my_cams", ["cam_c"], root=str(tmp_path), image_size=16, num_workers=0)
    dm.setup("fit")
    assert dm.domain_names == ["cam_a", "cam_b", "cam_c"] and dm.source_domains == ["cam_a", "cam_b"]
    assert dm.folder_class_names == ["Desk_Lamp", "cat"] and dm.class_names == ["desk lamp", "cat"]
    listing = _listing(folder)
    assert dm.table.ids.to_pylist() == [f for d in ("cam_a", "cam_b", "cam_c") for f in listing[d]]
    manifest = dm.split_manifest
    assert manifest["dataset"] == "my_cams" and manifest["test_domains"] == ["cam_c"]
    for env_index, domain in enumerate(["cam_a", "cam_b", "cam_c"]):
        in_idx, out_idx = holdout_split(8, 0, env_index, 0.2)  # DomainBed's formula (tested in test_splits)
        files = listing[domain]
        assert manifest["domains"][domain] == {"in": [files[i] for i in in_idx], "out": [files[i] for i in out_idx]}
    printed = run_main("splits", "--dataset", "my_cams", "--root", str(tmp_path), cwd=tmp_path)
    assert printed.returncode == 0 and json.loads(printed.stdout)["domains"] == manifest["domains"], printed.stderr
    # by its path, from anywhere: the same table; hparams keep the full path
    by_path = DomainBedDataModule(str(folder), ["cam_c"], root=str(tmp_path / "elsewhere"), image_size=16,
                                  class_names=["lamp", "kitten"])
    by_path.setup("fit")
    assert by_path.table.ids.to_pylist() == dm.table.ids.to_pylist() and by_path.class_names == ["lamp", "kitten"]
    assert by_path.hparams["dataset"] == str(folder.resolve()) and by_path.info.name == "my_cams"


def test_a_registered_benchmark_copied_under_another_name_splits_the_same(tmp_path):
    """The discovered dataset is the registry's, domain for domain, sample for sample."""
    make_benchmark(tmp_path, "vlcs", per_class=3, size=4)
    shutil.copytree(tmp_path / "VLCS", tmp_path / "my_vlcs")
    registered = DomainBedDataModule("vlcs", ["SUN09"], root=str(tmp_path), trial_seed=3)
    own = DomainBedDataModule("my_vlcs", ["SUN09"], root=str(tmp_path), trial_seed=3)
    registered.setup("fit")
    own.setup("fit")
    assert own.info.own and not registered.info.own
    assert own.domain_names == registered.domain_names and own.class_names == registered.class_names
    assert own.split_manifest["domains"] == registered.split_manifest["domains"]


def test_the_discovered_layout_is_indexed_once_and_again_when_a_folder_changes(tmp_path, monkeypatch):
    import dg_heads.data.folder as folder_module

    folder = _cams(tmp_path)
    first = folder_module.load_folder_table(folder, None, None)
    scans = []
    real_scan = folder_module.scan_folder
    monkeypatch.setattr(folder_module, "scan_folder", lambda d: scans.append(d) or real_scan(d))
    again = folder_module.load_folder_table(folder, None, None)
    assert scans == [] and again.classes == ["Desk_Lamp", "cat"] and again.domains == first.domains
    shutil.copytree(folder / "cam_a", folder / "cam_d")
    grown = folder_module.load_folder_table(folder, None, None)
    assert len(scans) == 1 and grown.domains == ["cam_a", "cam_b", "cam_c", "cam_d"]


# ----------------------------------------------------------------- Hugging Face
def _hf_of(folder: Path, out: Path, class_label: bool = True, drop: tuple[str, str] | None = None) -> Path:
    """The folder as a HF dataset: image bytes, labels a ClassLabel whose names are not sorted
    (or plain strings), a string domain column, relative paths as ids; rows shuffled."""
    import datasets

    listing = _listing(folder)
    names = ["cat", "Desk_Lamp"]  # not the sorted order
    rows = {"image": [], "label": [], "domain": [], "path": []}
    for domain, files in listing.items():
        for rel in files:
            cls = rel.split("/")[1]
            if drop == (domain, cls):
                continue
            rows["image"].append({"bytes": (folder / rel).read_bytes(), "path": None})
            rows["label"].append(names.index(cls) if class_label else cls)
            rows["domain"].append(domain)
            rows["path"].append(rel)
    label = datasets.ClassLabel(names=names) if class_label else datasets.Value("string")
    features = datasets.Features({"image": datasets.Image(), "label": label, "domain": datasets.Value("string"),
                                  "path": datasets.Value("string")})
    order = np.random.default_rng(1).permutation(len(rows["path"]))
    ds = datasets.Dataset.from_dict({k: [v[i] for i in order] for k, v in rows.items()}, features=features)
    ds.save_to_disk(str(out / "saved"))
    (out / "parquet").mkdir(parents=True)
    ds.to_parquet(str(out / "parquet" / "train-00000.parquet"))
    return out


def test_a_hf_dataset_not_in_the_registry_reads_its_classes_and_domains_from_the_columns(tmp_path):
    folder = _cams(tmp_path)
    hf = _hf_of(folder, tmp_path / "hf")
    from_folder = DomainBedDataModule("my_cams", ["cam_b"], root=str(tmp_path), image_size=16, num_workers=0)
    from_folder.setup("fit")
    for source in (HFSource(path=str(hf / "saved"), id_column="path"),
                   HFSource(data_files=[str(hf / "parquet" / "*.parquet")], id_column="path")):
        dm = DomainBedDataModule("lab_cams", ["cam_b"], hf=source, image_size=16, num_workers=0)
        dm.setup("fit")
        assert dm.info.name == "lab_cams" and dm.domain_names == ["cam_a", "cam_b", "cam_c"]
        assert dm.folder_class_names == ["Desk_Lamp", "cat"] and dm.class_names == ["desk lamp", "cat"]
        assert dm.table.ids.to_pylist() == from_folder.table.ids.to_pylist()
        assert np.array_equal(dm.table.labels, from_folder.table.labels)
        assert dm.split_manifest["domains"] == from_folder.split_manifest["domains"]
        xa, ya = next(iter(dm.test_dataloader()[0]))
        xb, yb = next(iter(from_folder.test_dataloader()[0]))
        assert np.array_equal(ya, yb) and np.array_equal(xa, xb)


def test_a_hf_domain_lacking_a_class_is_named(tmp_path):
    hf = _hf_of(_cams(tmp_path), tmp_path / "hf", class_label=False, drop=("cam_c", "cat"))
    dm = DomainBedDataModule("lab_cams", ["cam_b"], hf=HFSource(path=str(hf / "saved")))
    with pytest.raises(DGHeadsError, match=r"the classes of domain 'cam_c' .* it has \['Desk_Lamp'\], they have "
                                           r"\['Desk_Lamp', 'cat'\] \(missing \['cat'\]"):
        dm.setup("fit")


def test_hf_integer_labels_sort_numerically_and_warn_that_prompts_are_numbers(tmp_path, caplog):
    import datasets

    image = (_cams(tmp_path, per_class=1) / "cam_a/cat/000.png").read_bytes()
    rows = [(d, label) for d in (10, 2) for label in (10, 2, 9) for _ in range(3)]
    ds = datasets.Dataset.from_dict({"image": [{"bytes": image, "path": None}] * len(rows),
                                     "domain": [d for d, _ in rows], "label": [c for _, c in rows]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "domain": datasets.Value("int64"),
                                                                "label": datasets.Value("int64")}))
    ds.save_to_disk(str(tmp_path / "ints"))
    dm = DomainBedDataModule("ints", [10], hf=HFSource(path=str(tmp_path / "ints")), image_size=16)
    dm.setup("fit")
    assert dm.domain_names == ["2", "10"] and dm.folder_class_names == ["2", "9", "10"]
    assert dm.table.labels[dm.table.rows_of("10")].tolist() == [0] * 3 + [1] * 3 + [2] * 3
    assert "holds plain integers with no ClassLabel names" in caplog.text and "set data.class_names" in caplog.text


# ------------------------------------------------------------------------ prepare
def test_prepare_prints_what_an_own_folder_holds(tmp_path):
    _cams(tmp_path, per_class=3)
    shutil.copy(tmp_path / "my_cams/cam_b/cat/000.png", tmp_path / "my_cams/cam_b/cat/003.png")  # one more
    result = run_main("prepare", "my_cams", "--root", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"my_cams at {tmp_path.resolve() / 'my_cams'}: usable"
    assert "  3 domain(s): cam_a, cam_b, cam_c" in lines
    assert "  2 class(es): Desk_Lamp ('desk lamp'), cat" in lines
    header = lines[lines.index("  images per domain and class (19 in all):") + 1]
    assert header.split() == ["class", "cam_a", "cam_b", "cam_c"]
    assert "    Desk_Lamp      3      3      3" in lines and "    cat            3      4      3" in lines
    as_json = json.loads(run_main("prepare", "my_cams", "--root", str(tmp_path), "--json", cwd=tmp_path).stdout)
    assert as_json["ok"] and as_json["counts"]["cam_b"] == {"Desk_Lamp": 3, "cat": 4}


def test_prepare_lists_every_problem_of_an_own_folder(tmp_path):
    _cams(tmp_path, per_class=2, cam_d=["Desk_Lamp", "cat", "dog"])
    (tmp_path / "my_cams/cam_e/cat").mkdir(parents=True)
    (tmp_path / "my_cams/cam_e/cat/notes.txt").write_text("x")
    result = run_main("prepare", str(tmp_path / "my_cams"), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    problems = [line for line in result.stdout.splitlines() if line.startswith("  problem:")]
    assert len(problems) == 2, result.stdout
    assert "domain 'cam_d'" in problems[0] and "(extra ['dog'])" in problems[0]
    assert "domain 'cam_e'" in problems[1]
    assert "no readable image: 1 class folder(s), 1 non-image file(s)" in problems[1]
    assert ["dog", "-", "-", "-", "2", "-"] in [line.split() for line in result.stdout.splitlines()]


def test_prepare_prints_what_a_hf_dataset_holds(tmp_path):
    hf = _hf_of(_cams(tmp_path, per_class=2), tmp_path / "hf")
    result = run_main("prepare", "lab_cams", "--hf", f"{{path: {hf / 'saved'}}}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "  3 domain(s): cam_a, cam_b, cam_c" in result.stdout
    assert "    cat            2      2      2" in result.stdout


# ------------------------------------------------------- bad input, through the CLI
FIT = ["fit", *demo_configs("finetune"), *QUICK]


def _fit_error(tmp_path: Path, dataset: str, test_domains: str = "[cam_c]", *extra: str) -> str:
    cwd = tmp_path / "run"
    cwd.mkdir()
    result = run_main(*FIT, "--data.init_args.dataset", dataset, "--data.init_args.root", str(tmp_path),
                      "--data.init_args.test_domains", test_domains, *extra, cwd=cwd)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert list(cwd.iterdir()) == [], "nothing may be written"
    return errors[0]


def test_an_unknown_name_with_no_folder_lists_the_datasets_and_the_folder_searched(tmp_path):
    line = _fit_error(tmp_path, "my_camz")
    assert "unknown dataset 'my_camz'" in line and "'pacs'" in line
    assert f"no folder {tmp_path.resolve() / 'my_camz'}" in line
    result = run_main("prepare", "my_camz", "--root", str(tmp_path), cwd=tmp_path / "run")
    assert result.returncode == 2 and result.stderr.startswith("error: unknown dataset 'my_camz'"), result.stderr
    assert list((tmp_path / "run").iterdir()) == []


def test_a_domain_whose_class_folders_differ_is_named_with_the_classes(tmp_path):
    _cams(tmp_path, cam_b=["Desk_Lamp", "kat"])
    line = _fit_error(tmp_path, "my_cams")
    assert "class folders of domain 'cam_b'" in line and "it has ['Desk_Lamp', 'kat']" in line
    assert "missing ['cat'], extra ['kat']" in line


@pytest.mark.parametrize("content", ["no_image_file", "corrupt_images"])
def test_a_domain_with_no_readable_image_is_named(tmp_path, content):
    folder = _cams(tmp_path)
    for f in sorted((folder / "cam_b").rglob("*.png")):
        if content == "no_image_file":
            f.unlink()
        else:
            f.write_bytes(b"version https://git-lfs.github.com/spec/v1\n")  # an LFS pointer, not an image
    if content == "no_image_file":
        (folder / "cam_b/cat/readme.txt").write_text("x")
    line = _fit_error(tmp_path, "my_cams")
    assert "domain 'cam_b'" in line and "holds no readable image" in line
    if content == "corrupt_images":
        assert "none of its 8 image(s) can be read" in line and "cam_b/Desk_Lamp/000.png" in line


def test_fewer_than_two_domains_is_an_error(tmp_path):
    make_domainbed(tmp_path, "one_cam", {"cam_a": ["cat", "dog"]}, per_class=2, size=8)
    line = _fit_error(tmp_path, str(tmp_path / "one_cam"), "[cam_a]")
    assert "found 1 domain(s) ['cam_a']; DG needs at least two" in line


def test_a_test_domain_not_discovered_lists_the_domains_found(tmp_path):
    _cams(tmp_path)
    line = _fit_error(tmp_path, "my_cams", "[cam_x]")
    assert "test_domains ['cam_x'] of my_cams: ['cam_x'] not a domain" in line
    assert "['cam_a', 'cam_b', 'cam_c']" in line


# ------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_an_own_folder_trains_and_tests_through_the_cli_with_the_example_config(tmp_path):
    folder = _cams(tmp_path / "data", per_class=6)
    result = run_cli("fit", *demo_configs("finetune"),
                     "--config", str(REPO / "configs/data/my_folder.yaml"), *QUICK,
                     "--data.init_args.dataset", str(folder), "--data.init_args.test_domains", "[cam_c]",
                     "--data.init_args.image_size", "32", "--data.init_args.batch_size_per_domain", "4",
                     "--data.init_args.train_augment", "none", "--trainer.limit_train_batches", "2",
                     "--test_after_fit", "true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs/my_cams/finetune/version_0"
    splits = json.loads((run / "splits.json").read_text())
    assert splits["dataset"] == "my_cams" and splits["test_domains"] == ["cam_c"]
    assert sorted(splits["domains"]) == ["cam_a", "cam_b", "cam_c"] and len(splits["domains"]["cam_a"]["out"]) == 2
    metrics = json.loads((run / "metrics_test.json").read_text())
    assert {"test/acc/cam_c", "val/acc/cam_a", "val/acc/cam_b"} <= set(metrics) and metrics["test/n/cam_c"] == 12
    rows = [line.split("|") for line in result.stdout.splitlines() if line.count("|") == 3]  # the per-domain table
    assert [(r[0].strip(), r[1].strip(), r[3].strip()) for r in rows if r[0].strip().startswith("cam_")] == [
        ("cam_a", "source (val)", "2"), ("cam_b", "source (val)", "2"), ("cam_c", "held out (test)", "12")]
