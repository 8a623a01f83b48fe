"""`dg-heads collect`: DomainBed's two model selections on hand-built run records, `--compare`
against hand-computed tables, and ordinary `lightning fit` run folders."""

import json
import shutil

import numpy as np
import pytest

from tests.conftest import CONFIGS, QUICK, demo_configs, run_main

PACS = ["art_painting", "cartoon", "photo", "sketch"]


def _job(runs, method, dataset, domain, seed, hp, val, test, oracle=None, done=True):
    """A sweep job folder as `dg-heads sweep` and a finished run leave it: job.json, done and
    version_0/metrics_test.json (val/acc, test/acc), with `oracle` = (test `out`, test `in`) of
    the last weights as metrics_oracle.json."""
    folder = runs / dataset / method / f"{domain}_seed{seed}_hp{hp}"
    (folder / "version_0").mkdir(parents=True)
    (folder / "job.json").write_text(json.dumps({"method": method, "dataset": dataset, "test_domain": domain,
                                                 "trial_seed": seed, "hparams_index": hp}))
    (folder / "version_0/metrics_test.json").write_text(json.dumps({"val/acc": val, "test/acc": test}))
    (folder / "version_0/splits.json").write_text(json.dumps({"test_split": "in"}))
    if oracle is not None:
        (folder / "version_0/metrics_oracle.json").write_text(json.dumps(
            {f"test/acc/{domain}/out": oracle[0], f"test/acc/{domain}/in": oracle[1], "global_step": 100}))
    if done:
        (folder / "done").write_text("{}")


def test_training_domain_and_oracle_selection_follow_domainbed(tmp_path):
    """Per (method, dataset, test domain, trial seed), over hyper-parameter sets: DomainBed's
    IIDAccuracySelectionMethod takes the run with the best source-domain validation accuracy and
    reports its test accuracy; OracleSelectionMethod takes the LAST checkpoint of each run, the
    run with the best test-domain `out` accuracy, and reports its test-domain `in` accuracy.
    The two disagree here on purpose, in both trial seeds."""
    runs = tmp_path / "runs"
    #                                          val   test   (oracle out, oracle in)
    _job(runs, "erm", "pacs", "photo", 0, 0, 0.90, 0.70, (0.60, 0.65))
    _job(runs, "erm", "pacs", "photo", 0, 1, 0.80, 0.75, (0.80, 0.78))
    _job(runs, "erm", "pacs", "photo", 1, 0, 0.70, 0.60, (0.90, 0.88))
    _job(runs, "erm", "pacs", "photo", 1, 1, 0.95, 0.66, (0.50, 0.55))
    _job(runs, "erm", "pacs", "sketch", 0, 0, 0.50, 0.40)  # an old run: no metrics_oracle.json
    result = run_main("collect", str(runs), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # training-domain validation: seed 0 -> hp0 (val .90) test 70; seed 1 -> hp1 (val .95) test 66
    #   mean 68.0, SE = std([70, 66]) / sqrt(2) = 2 / 1.414 = 1.4
    # oracle: seed 0 -> hp1 (out .80) in 78; seed 1 -> hp0 (out .90) in 88: mean 83.0, SE 5 / 1.414 = 3.5
    md = (runs / "results/pacs.md").read_text()
    training, oracle = md.split("\n\n## ")
    assert training.startswith("## PACS: test accuracy (%) on their DomainBed `in` split, model selection: "
                               "training-domain validation set; mean ± SE over trial seeds\n")
    assert ("| Method | photo | sketch | Avg |\n|---|---|---|---|\n"
            "| erm | 68.0 ± 1.4 | 40.0 ± 0.0 (1/2 seeds) | 54.0 |") in training
    assert oracle.startswith("PACS: test accuracy (%) on the test domains' DomainBed `in` split, model selection: "
                             "test-domain validation set (oracle); mean ± SE over trial seeds\n")
    assert "| Method | photo | sketch | Avg |\n|---|---|---|---|\n| erm | 83.0 ± 3.5 | - | - |" in oracle
    csv = (runs / "results/pacs.csv").read_text().splitlines()
    assert "training-domain validation set,erm,photo,68.0000,1.4142,2" in csv
    assert "test-domain validation set (oracle),erm,photo,83.0000,3.5355,2" in csv
    tex = (runs / "results/pacs.tex").read_text()
    assert tex.count("\\caption{") == 2 and "model selection: test-domain validation set (oracle)" in tex
    assert (runs / "results/pacs.png").is_file() and (runs / "results/pacs_oracle.png").is_file()
    assert "1 finished run(s) have no metrics_oracle.json" in result.stdout
    assert "model selection: test-domain validation set (oracle)" in result.stdout


def _hap_runs(runs):
    """hap on all of PACS, 2 trial seeds, and on 2 of OfficeHome's 4 domains; zero_shot on PACS,
    2 seeds; lora (no figure in the paper) on PACS, 1 seed. One hyper-parameter set each."""
    accs = {("hap", 0): [0.96, 0.98, 1.00, 0.94], ("hap", 1): [0.98, 0.98, 0.99, 0.97],  # means 97, 98
            ("zero_shot", 0): [0.90] * 4, ("zero_shot", 1): [0.92] * 4, ("lora", 0): [0.80] * 4}
    for (method, seed), values in accs.items():
        for domain, acc in zip(PACS, values):
            _job(runs, method, "pacs", domain, seed, 0, 0.5, acc, (0.5, acc - 0.10))
    for domain in ("Art", "Clipart"):
        _job(runs, "hap", "office_home", domain, 0, 0, 0.5, 0.85, (0.5, 0.85))


def test_compare_hap_prints_the_papers_figures_beside_ours(tmp_path):
    """Hand-computed: hap PACS per seed 97.0 and 98.0: 97.5 ± 0.5 / sqrt(2) = 0.35; HAP's 98.1:
    -0.6, within 2 SE (0.71). zero_shot 90, 92: 91.0 ± 0.71; HAP's 96.1: -5.1, not within. lora:
    the paper has no figure. OfficeHome: 2 of 4 domains: X. Avg over five benchmarks: X."""
    runs = tmp_path / "runs"
    _hap_runs(runs)
    result = run_main("collect", str(runs), "--compare", "hap", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    md = (runs / "results/compare_hap.md").read_text()
    assert md.startswith("### HAP main table: ours beside the paper, model selection: training-domain validation set\n"
                         "\nPaper: Yingfan Wang, Guoliang Kang, \"Attention Head Purification: A New Perspective to "
                         "Harness CLIP for Domain Generalization\", arXiv 2412.07226, the paper's main results table "
                         "(table number not given in our sources); CLIP ViT-B/16 (OpenAI weights), "
                         "leave-one-domain-out, mean of 3 trials. Ours:")
    main = """| Method | Dataset | Ours | n | Paper | Ours − paper | Within 2 SE |
|---|---|---|---|---|---|---|
| zero_shot | PACS | 91.0 ± 0.7 | 2 | 96.1 | -5.1 | no |
| zero_shot | OfficeHome | — |  | 82.4 | — | — |
| zero_shot | DomainNet | — |  | 56.6 | — | — |
| zero_shot | Avg | X |  | 70.2 | — | — |
| hap | PACS | 97.5 ± 0.4 | 2 | 98.1 | -0.6 | yes |
| hap | OfficeHome | X (2/4 domains) |  | 87.0 | — | — |
| hap | DomainNet | — |  | 61.1 | — | — |
| hap | Avg | X |  | 78.2 | — | — |
| lora | PACS | 80.0 ± 0.0 | 1 | — | — | — |
| lora | Avg | X |  | — | — | — |

Notes:
- hap with PromptStyler's prompts (not ours): five-benchmark average 79.0, DomainNet 62.0; not compared"""
    assert main in md
    mmd = """### HAP's MMD routing (which parameters the MMD loss updates): ours beside the paper, model selection: \
training-domain validation set"""
    assert mmd in md
    assert md.endswith("""| Method | Dataset | Ours | n | Paper | Ours − paper | Within 2 SE |
|---|---|---|---|---|---|---|
| hap | OfficeHome | X (2/4 domains) |  | 87.0 | — | — |
| mmd_on_lora | OfficeHome | — |  | 85.8 | — | — |
| mmd_on_both | OfficeHome | — |  | 86.0 | — | — |
""")
    assert "| plain_lora_gating | OfficeHome | — |  | about 86.0 | — | — |" in md
    # the oracle: each run's test-domain `in` accuracy is 10 points lower, so hap PACS 87.5, -10.6
    assert "| hap | PACS | 87.5 ± 0.4 | 2 | 98.1 | -10.6 | no |" in md
    assert md.count("model selection: test-domain validation set (oracle)") == 3  # one per paper table
    assert main in result.stdout
    rows = (runs / "results/compare_hap.csv").read_text().splitlines()
    assert rows[0] == ("selection,table,method,dataset,ours_mean,ours_std_error,trial_seeds,ours_note,paper,"
                       "paper_about,difference,within_2se")
    assert "training-domain validation set,main,hap,pacs,97.5000,0.3536,2,,98.1,false,-0.6000,true" in rows
    assert "training-domain validation set,main,zero_shot,pacs,91.0000,0.7071,2,,96.1,false,-5.1000,false" in rows
    assert "training-domain validation set,main,hap,Avg,,,,X,78.2,false,," in rows
    assert "training-domain validation set,ablation,plain_lora_gating,office_home,,,,—,86.0,true,," in rows
    assert "\\caption{HAP main table" in (runs / "results/compare_hap.tex").read_text()
    check_bars(runs / "results/compare_hap_main.png", {"zero_shot": [91.0], "hap": [97.5], "lora": [80.0]},
                marks={"zero_shot": 96.1, "hap": 98.1})


def test_the_five_benchmark_average_is_per_trial_seed_over_complete_benchmarks(tmp_path):
    """hap on every domain of the five benchmarks, 2 trial seeds. Per seed, each benchmark's mean
    over its domains is (PACS, VLCS, OfficeHome, TerraIncognita, DomainNet) = (98, 80, 86, 50, 60)
    and (98, 82, 88, 52, 62): five-benchmark averages 74.8 and 76.4, so 75.6 ± 0.8 / sqrt(2) = 0.57;
    HAP's 78.2: -2.6, outside 2 SE (1.13)."""
    from dg_heads.data.registry import get_dataset

    runs = tmp_path / "runs"
    per_seed = {"pacs": (0.98, 0.98), "vlcs": (0.80, 0.82), "office_home": (0.86, 0.88),
                "terra_incognita": (0.50, 0.52), "domain_net": (0.60, 0.62)}
    for dataset, accs in per_seed.items():
        for domain in get_dataset(dataset).domains:
            for seed, acc in enumerate(accs):
                _job(runs, "hap", dataset, domain, seed, 0, 0.5, acc, (0.5, acc))
    result = run_main("collect", str(runs), "--compare", "hap", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    md = (runs / "results/compare_hap.md").read_text()
    assert """| hap | PACS | 98.0 ± 0.0 | 2 | 98.1 | -0.1 | no |
| hap | VLCS | 81.0 ± 0.7 | 2 | — | — | — |
| hap | OfficeHome | 87.0 ± 0.7 | 2 | 87.0 | +0.0 | yes |
| hap | TerraIncognita | 51.0 ± 0.7 | 2 | — | — | — |
| hap | DomainNet | 61.0 ± 0.7 | 2 | 61.1 | -0.1 | yes |
| hap | Avg | 75.6 ± 0.6 | 2 | 78.2 | -2.6 | no |""" in md
    assert "training-domain validation set,main,hap,Avg,75.6000,0.5657,2,,78.2,false,-2.6000,false" in \
        (runs / "results/compare_hap.csv").read_text().splitlines()


def test_an_unknown_paper_is_one_error_line_naming_the_known_ones(tmp_path):
    runs = tmp_path / "runs"
    _hap_runs(runs)
    result = run_main("collect", str(runs), "--compare", "happ", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --compare happ: no such paper; known: aat, hap"
    assert not (runs / "results").exists()


def test_the_paper_figures_ship_with_the_package():
    """pyproject's package-data names the YAML files (a wheel without them knows no paper)."""
    import tomllib

    from tests.conftest import REPO

    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["dg_heads"]
    assert "papers/*.yaml" in data and (REPO / "dg_heads/papers/hap.yaml").is_file()


def check_bars(path, means, marks=None):
    """An independent reading of a result figure (PNG): decoded with Pillow; each method's bars
    found by its colour (Okabe-Ito, in table order), left to right; bar heights in pixels in the
    ratio of the means (2 px), all bars on one baseline; a paper's mark (red, 3 px) across the
    method's first bar at the height of its figure."""
    from PIL import Image

    palette = [(0, 114, 178), (230, 159, 0), (0, 158, 115), (204, 121, 167)]
    image = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert image.shape[0] > 200 and image.shape[1] > 200
    assert (image != 255).any(axis=2).mean() > 0.02  # not blank: axes, text, bars
    heights, bases = {}, set()
    for colour, (method, values) in zip(palette, means.items()):
        mask = (image == colour).all(axis=2)
        cols = np.flatnonzero(mask[:, :].sum(axis=0) > 12)  # bar columns (the legend swatch is 11 px high)
        groups = np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1)
        assert len(groups) == len(values), (method, len(groups))
        heights[method] = [int(mask[:, g].sum(axis=0).max()) for g in groups]
        bases |= {int(np.flatnonzero(mask[:, g].any(axis=1)).max()) for g in groups}
        if marks and method in marks:
            red = (image == (200, 0, 0)).all(axis=2)
            rows = np.flatnonzero(red[:, groups[0]].any(axis=1))
            assert len(rows) == 3, rows
            above = max(bases) - rows.mean()
            assert abs(above / heights[method][0] - marks[method] / values[0]) < 0.02
    assert len(bases) == 1
    flat = [(h, v) for m in means for h, v in zip(heights[m], means[m])]
    top_h, top_v = max(flat, key=lambda x: x[1])
    for h, v in flat:
        assert abs(h - top_h * v / top_v) <= 2, (h, v, top_h, top_v)


@pytest.mark.slow
def test_collect_reads_ordinary_runs_of_lightning_fit(data_root, tmp_path):
    """A real run (tiny CLIP, a few steps, the progress bar on), as a user starts it, in
    runs/rotated_digits/finetune/version_0, and beside it a second run of the same method and test
    domain (its folder copied, its records rewritten: a better val/acc, a worse oracle `out`; one
    real fit is what reading a run folder needs, and collect's selection among hand-written
    records is tested above). `collect runs/rotated_digits` picks, for training-domain validation,
    the run with the better val/acc (its test/acc) and, for the oracle, the one whose LAST weights
    scored better on the test domain's `out` split (its `in` accuracy): here different runs."""
    result = run_main("fit", *demo_configs("finetune"), *QUICK, "--trainer.limit_test_batches", "2",
                      "--test_after_fit", "true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Epoch 0: 100%" in result.stdout + result.stderr  # the progress bar is on
    real, other = (tmp_path / f"runs/rotated_digits/finetune/version_{i}" for i in (0, 1))
    test = json.loads((real / "metrics_test.json").read_text())
    oracle = json.loads((real / "metrics_oracle.json").read_text())
    fit = json.loads((real / "metrics_fit.json").read_text())
    assert oracle["global_step"] == fit["global_step"] == 3  # the last weights: the end of training
    assert set(oracle) == {"global_step", "epoch", "test/acc/75/in", "test/acc/75/out", "test/n/75/in",
                           "test/n/75/out"}
    assert test["val/acc"] < 1 and oracle["test/acc/75/out"] > 0, (test, oracle)  # room for the other run
    shutil.copytree(real, other)
    (other / "metrics_test.json").write_text(json.dumps({**test, "val/acc": 1.0, "test/acc": 0.125}))
    (other / "metrics_oracle.json").write_text(json.dumps(
        {**oracle, "test/acc/75/out": oracle["test/acc/75/out"] / 2, "test/acc/75/in": 0.875}))
    result = run_main("collect", "runs/rotated_digits", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "model selection: training-domain validation set" in out
    assert "| finetune | 12.5 ± 0.0 | 12.5 |" in out.split("(oracle)")[0]  # the other run's: better val/acc
    oracle_in = 100 * oracle["test/acc/75/in"]  # the real run's: its last weights' better `out`
    assert f"| finetune | {oracle_in:.1f} ± 0.0 | {oracle_in:.1f} |" in out.split("(oracle)")[1]
    assert (tmp_path / "runs/rotated_digits/results/rotated_digits.md").is_file()


def test_the_oracle_pass_reads_each_test_domains_in_and_out_splits(data_root):
    """Inside `oracle_test()` the test loaders are the held-out domain's DomainBed `in` and `out`
    splits (those of `dg-heads splits`), named `<domain>/in` and `<domain>/out`, whatever
    `test_split` says; outside it, the test split as configured."""
    from dg_heads.data import DomainBedDataModule

    data = DomainBedDataModule("rotated_digits", ["75"], trial_seed=1, test_split="all", num_workers=0,
                               image_size=32)
    data.prepare_data()
    data.setup("test")
    manifest = data.split_manifest["domains"]["75"]
    assert data.eval_domains("test") == ["75"] and data.eval_sizes("test") == {"75": 1797}
    with data.oracle_test():
        assert data.eval_domains("test") == ["75/in", "75/out"]
        assert data.eval_sizes("test") == {"75/in": len(manifest["in"]), "75/out": len(manifest["out"])}
        loaders = data.test_dataloader()
        rows = [loader.dataset.rows for loader in loaders]
        assert [data.table.ids_of(r) for r in rows] == [manifest["in"], manifest["out"]]
    assert data.eval_domains("test") == ["75"] and len(data.test_dataloader()) == 1


def test_a_test_only_run_is_its_own_selection_in_both_tables(tmp_path):
    """A zero-shot job of the papers' sweeps runs `test` only: its metrics_test.json has `test/acc`
    and no `val/acc`, and it has no metrics_oracle.json. There is nothing to select (no
    hyper-parameters, no checkpoints), so both selections report its test accuracy; a retrieval
    run's metrics are named as such, not tabulated."""
    runs = tmp_path / "runs"
    for seed, acc in ((0, 0.90), (1, 0.94)):
        _job(runs, "zero_shot", "pacs", "photo", seed, 0, None, acc)
        metrics = runs / f"pacs/zero_shot/photo_seed{seed}_hp0/version_0/metrics_test.json"
        metrics.write_text(json.dumps({"test/acc": acc, "test/acc/photo": acc}))
    result = run_main("collect", str(runs), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # 90 and 94: mean 92.0, SE = std([90, 94]) / sqrt(2) = 2 / 1.414 = 1.4, in both tables (test_split `in`)
    md = (runs / "results/pacs.md").read_text()
    training, oracle = md.split("\n\n## ")
    assert "| zero_shot | 92.0 ± 1.4 | 92.0 |" in training
    assert "| zero_shot | 92.0 ± 1.4 | 92.0 |" in oracle
    assert "metrics_oracle.json" not in result.stdout  # a test-only run never should have one
    assert "test-only run(s)" not in result.stdout


def test_a_test_only_run_of_the_whole_held_out_domain_is_in_the_training_domain_table_only(tmp_path):
    """The zero-shot sweep's jobs score `test_split: all` (the whole held-out domain); the oracle's
    figure is the test domain's `in` split, so they stay out of the oracle table, with one message
    naming how many and why; they are not counted as runs lacking metrics_oracle.json."""
    runs = tmp_path / "runs"
    for seed, acc in ((0, 0.90), (1, 0.94)):
        _job(runs, "zero_shot", "pacs", "photo", seed, 0, None, acc)
        version = runs / f"pacs/zero_shot/photo_seed{seed}_hp0/version_0"
        (version / "metrics_test.json").write_text(json.dumps({"test/acc": acc, "test/acc/photo": acc}))
        (version / "splits.json").write_text(json.dumps({"test_split": "all"}))
    _job(runs, "erm", "pacs", "photo", 0, 0, 0.90, 0.70, (0.60, 0.65))
    result = run_main("collect", str(runs), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    md = (runs / "results/pacs.md").read_text()
    training, oracle = md.split("\n\n## ")
    assert "| zero_shot | 92.0 ± 1.4 | 92.0 |" in training and "| erm | 70.0 ± 0.0 (1/2 seeds) | 70.0 |" in training
    assert "zero_shot" not in oracle and "| erm | 65.0 ± 0.0 (1/2 seeds) | 65.0 |" in oracle
    assert result.stdout.count("test-only run(s)") == 1
    assert ("2 test-only run(s) have nothing to select and scored the whole held-out domain: in the "
            "training-domain table only") in result.stdout
    assert "metrics_oracle.json" not in result.stdout


def test_within_2_se_allows_for_the_papers_rounding(tmp_path):
    """HAP prints its figures to 0.1, so a figure stands for +/- 0.05. Three identical zero-shot
    trials (SE 0): PACS 96.13 against HAP's 96.1 is +0.03, within 0 + 0.05: yes; OfficeHome 82.46
    against 82.4 is +0.06, beyond 0.05: no."""
    from dg_heads.data.registry import get_dataset

    runs = tmp_path / "runs"
    for dataset, acc in (("pacs", 0.9613), ("office_home", 0.8246)):
        for domain in get_dataset(dataset).domains:
            for seed in (0, 1, 2):
                _job(runs, "zero_shot", dataset, domain, seed, 0, 0.5, acc, (0.5, acc))
    result = run_main("collect", str(runs), "--compare", "hap", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    md = (runs / "results/compare_hap.md").read_text()
    assert "| zero_shot | PACS | 96.1 ± 0.0 | 3 | 96.1 | +0.0 | yes |" in md
    assert "| zero_shot | OfficeHome | 82.5 ± 0.0 | 3 | 82.4 | +0.1 | no |" in md
    assert ("Within 2 SE: |ours − paper| ≤ 2 SE + half the last digit the paper prints (0.05 for a figure given "
            "to 0.1, its rounding)") in md
    rows = (runs / "results/compare_hap.csv").read_text().splitlines()
    assert "training-domain validation set,main,zero_shot,pacs,96.1300,0.0000,3,,96.1,false,0.0300,true" in rows


RECALL_NAMES = ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"]


def _retrieval_run(folder, method, seed, model, tested, val_rsum=None, job=None):
    """A retrieval run folder as `lightning fit/test` leaves it (checked against a real run of the
    demo configs): config.yaml (the logger's name = the method, seed_everything, the CLIP),
    splits.json (`task: retrieval`, the test datasets), metrics_test.json (`test/<name>` with one
    test dataset, `test/<dataset>/<name>` and their mean with several). `tested`: dataset -> six
    recalls (I->T R@1/5/10, T->I R@1/5/10); RSUM is their sum. With `job`, a sweep job folder."""
    import yaml

    version = folder / "version_0" if job is not None else folder
    version.mkdir(parents=True)
    config = {"seed_everything": seed, "trainer": {"logger": {"init_args": {"name": method}}},
              "model": {"init_args": {"clip": {"model_name": model[0], "pretrained": model[1]}}}}
    (version / "config.yaml").write_text(yaml.safe_dump(config))
    (version / "splits.json").write_text(json.dumps({"task": "retrieval", "test": {
        ds: {"dataset": ds, "split": "test", "images": 1000} for ds in tested}}))
    metrics = {} if val_rsum is None else {"val/rsum": val_rsum}
    for ds, recalls in tested.items():
        values = dict(zip(RECALL_NAMES, recalls), rsum=sum(recalls))
        metrics[f"test/n/{ds}"] = 1000.0
        for name, value in values.items():
            metrics[f"test/{ds}/{name}" if len(tested) > 1 else f"test/{name}"] = value
    if len(tested) > 1:
        for name in [*RECALL_NAMES, "rsum"]:
            metrics[f"test/{name}"] = float(np.mean([metrics[f"test/{ds}/{name}"] for ds in tested]))
    (version / "metrics_test.json").write_text(json.dumps(metrics))
    if job is not None:
        (folder / "job.json").write_text(json.dumps({"method": method, "dataset": job, "test_domain": "test",
                                                     "trial_seed": seed, "hparams_index": 0}))
        (folder / "done").write_text("{}")


def test_retrieval_runs_are_tabulated_per_test_dataset(tmp_path):
    """Ordinary runs and sweep jobs of retrieval: a table per test dataset, a row per method and
    model, each recall's mean ± SE over trial seeds. Hand-computed: finetune on Flickr30k seeds 0
    and 1 (seed 0 run twice: the rerun with the lower val/rsum is not chosen): I->T R@1 60 and 64,
    62.00 ± std([60, 64]) / sqrt(2) = 2 / 1.414 = 1.41; RSUM 60+80+90+40+70+80 = 420 and 424, 422.00 ±
    1.41. aat_scan, sweep jobs tested on Flickr30k and MS-COCO (seeds 0, 1): Flickr30k I->T R@1
    70 and 71, 70.50 ± 0.35; MS-COCO I->T R@1 40 both, 40.00 ± 0.00."""
    runs = tmp_path / "runs"
    tiny = ("dg-tiny-vit", None)
    _retrieval_run(runs / "flickr30k/finetune/version_0", "finetune", 0, tiny, {"flickr30k": [60, 80, 90, 40, 70, 80]},
                   val_rsum=300)
    _retrieval_run(runs / "flickr30k/finetune/version_1", "finetune", 0, tiny, {"flickr30k": [10, 10, 10, 10, 10, 10]},
                   val_rsum=100)
    _retrieval_run(runs / "flickr30k/finetune/version_2", "finetune", 1, tiny, {"flickr30k": [64, 80, 90, 40, 70, 80]},
                   val_rsum=310)
    for seed, r1 in ((0, 70), (1, 71)):
        _retrieval_run(runs / f"sweep/mscoco/aat_scan/test_seed{seed}_hp0", "aat_scan", seed, tiny,
                       {"flickr30k": [r1, 80, 90, 40, 70, 80], "mscoco": [40, 60, 70, 20, 40, 50]},
                       val_rsum=200, job="mscoco")
    result = run_main("collect", str(runs), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    flickr = (runs / "results/retrieval_flickr30k.md").read_text()
    assert flickr.startswith("## Flickr30k (test split, 1000 images): retrieval recall (%), I->T image to text, "
                             "T->I text to image, RSUM their sum; model selection: each run's own, the checkpoint "
                             "with the best val/rsum")
    assert """| Method | Model | I->T R@1 | I->T R@5 | I->T R@10 | T->I R@1 | T->I R@5 | T->I R@10 | RSUM | n |
|---|---|---|---|---|---|---|---|---|---|
| aat_scan | dg-tiny-vit | 70.50 ± 0.35 | 80.00 ± 0.00 | 90.00 ± 0.00 | 40.00 ± 0.00 | 70.00 ± 0.00 | 80.00 ± 0.00 | \
430.50 ± 0.35 | 2 |
| finetune | dg-tiny-vit | 62.00 ± 1.41 | 80.00 ± 0.00 | 90.00 ± 0.00 | 40.00 ± 0.00 | 70.00 ± 0.00 | 80.00 ± 0.00 | \
422.00 ± 1.41 | 2 |""" in flickr
    coco = (runs / "results/retrieval_mscoco.md").read_text()
    assert "| aat_scan | dg-tiny-vit | 40.00 ± 0.00 | 60.00 ± 0.00 | 70.00 ± 0.00 | 20.00 ± 0.00 | 40.00 ± 0.00 | " \
           "50.00 ± 0.00 | 280.00 ± 0.00 | 2 |" in coco
    assert "finetune" not in coco
    csv = (runs / "results/retrieval_flickr30k.csv").read_text().splitlines()
    assert csv[0] == "method,model_name,pretrained,metric,mean,std_error,trial_seeds"
    assert "finetune,dg-tiny-vit,,i2t_r1,62.0000,1.4142,2" in csv
    assert "finetune,dg-tiny-vit,,rsum,422.0000,1.4142,2" in csv
    assert "\\caption{Flickr30k (test split, 1000 images)" in (runs / "results/retrieval_flickr30k.tex").read_text()
    assert flickr.split("\n\n", 1)[1] in result.stdout
    assert "retrieval_flickr30k.{md,tex,csv}, retrieval_mscoco.{md,tex,csv}" in result.stdout
    assert "metrics_oracle.json" not in result.stdout and "pending" not in result.stdout


def test_compare_aat_puts_our_zero_shot_recall_beside_open_clips(tmp_path):
    """open_clip's published zero-shot figures (OpenAI weights), only beside runs of that model.
    Hand-computed, ViT-B-16 on Flickr30k, 2 seeds: I->T R@1 82.23 both (SE 0) against 82.2: +0.03,
    within 0 + 0.05 (printed to 0.1): yes; I->T R@5 96 and 97: 96.50 ± 0.5 / 1.414 = 0.35 against 96.6:
    -0.10, within 0.71 + 0.05: yes; T->I R@1 62.17 against 62.16: +0.01, beyond 0 + 0.005 (printed to
    0.01): no. ViT-B-32, one run: zero-shot is test-only (nothing trained, the figure is the same for
    every seed: SE 0), so it is judged too: I->T R@1 79.0 against 78.9, +0.10, beyond 0.05: no;
    T->I R@1 58.78 against 58.78: yes. A zero_shot run of another model is not compared; MS-COCO
    has no run."""
    runs = tmp_path / "runs"
    for seed, r5 in ((0, 96.0), (1, 97.0)):
        _retrieval_run(runs / f"b16/version_{seed}", "zero_shot", seed, ("ViT-B-16", "openai"),
                       {"flickr30k": [82.23, r5, 99.0, 62.17, 85.72, 91.92]})
    _retrieval_run(runs / "b32/version_0", "zero_shot", 0, ("ViT-B-32", "openai"),
                   {"flickr30k": [79.0, 94.9, 98.2, 58.78, 83.56, 90.02]})
    _retrieval_run(runs / "tiny/version_0", "zero_shot", 0, ("dg-tiny-vit", None), {"flickr30k": [1, 5, 10, 1, 5, 10]})
    result = run_main("collect", str(runs), "--compare", "aat", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    md = (runs / "results/compare_aat.md").read_text()
    assert md.startswith("### Flickr30k: our zero_shot recall beside Zero-shot retrieval with OpenAI's weights "
                         "(open_clip's published results)\n\nReference: open_clip's "
                         "docs/openclip_retrieval_results.csv")
    assert "AAT's own per-dataset recall table" in md and "Karpathy 1k test (1000 images)" in md
    assert """| Model | Recall | Ours | n | Reference | Ours − reference | Within 2 SE |
|---|---|---|---|---|---|---|
| ViT-B-16 (openai) | I->T R@1 | 82.23 ± 0.00 | 2 | 82.2 | +0.03 | yes |
| ViT-B-16 (openai) | I->T R@5 | 96.50 ± 0.35 | 2 | 96.6 | -0.10 | yes |
| ViT-B-16 (openai) | I->T R@10 | 99.00 ± 0.00 | 2 | 99.0 | +0.00 | yes |
| ViT-B-16 (openai) | T->I R@1 | 62.17 ± 0.00 | 2 | 62.16 | +0.01 | no |
| ViT-B-16 (openai) | T->I R@5 | 85.72 ± 0.00 | 2 | 85.72 | +0.00 | yes |
| ViT-B-16 (openai) | T->I R@10 | 91.92 ± 0.00 | 2 | 91.92 | +0.00 | yes |
| ViT-B-32 (openai) | I->T R@1 | 79.00 ± 0.00 | 1 | 78.9 | +0.10 | no |""" in md
    assert "| ViT-B-32 (openai) | T->I R@1 | 58.78 ± 0.00 | 1 | 58.78 | +0.00 | yes |" in md
    assert "except test-only runs (nothing trained, a fixed test set: the same figure for every seed, SE 0)" in md
    assert "dg-tiny-vit" not in md
    assert md.rstrip().endswith("Reference datasets with no retrieval run here: MS-COCO")
    assert md.split("\n\n", 2)[2].split("\n\n")[0] in result.stdout
    rows = (runs / "results/compare_aat.csv").read_text().splitlines()
    assert rows[0] == ("dataset,model_name,pretrained,method,metric,ours_mean,ours_std_error,trial_seeds,reference,"
                       "difference,within_2se")
    assert "flickr30k,ViT-B-16,openai,zero_shot,t2i_r1,62.1700,0.0000,2,62.16,0.0100,false" in rows
    assert "flickr30k,ViT-B-32,openai,zero_shot,i2t_r1,79.0000,0.0000,1,78.9,0.1000,false" in rows
    assert "\\caption{Flickr30k: our zero\\_shot recall" in (runs / "results/compare_aat.tex").read_text()


@pytest.mark.slow
def test_collect_reads_a_real_retrieval_run(tmp_path):
    """What `lightning test` with the zero-shot config leaves on DigitCaptions (tiny CLIP): collect
    names its method (the logger's), model (config.yaml) and test dataset (splits.json), and its
    row is the run's own metrics_test.json; `--compare aat` says no reference exists for it."""
    configs = [a for name in ("data/digit_captions.yaml", "method/zero_shot.yaml", "trainer/demo.yaml")
               for a in ("--config", str(CONFIGS / name))]
    result = run_main("test", *configs, "--data.init_args.num_workers", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "runs/digit_captions/zero_shot/version_0/metrics_test.json").read_text())
    result = run_main("collect", "runs/digit_captions", "--compare", "aat", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cells = " | ".join(f"{metrics['test/' + m]:.2f} ± 0.00" for m in [*RECALL_NAMES, "rsum"])
    assert f"| zero_shot | dg-tiny-vit | {cells} | 1 |" in result.stdout
    assert "## digit_captions (test split, 100 images): retrieval recall (%)" in result.stdout
    assert "digit_captions: no reference figures in dg_heads/papers/aat.yaml (it has Flickr30k, MS-COCO)" \
        in result.stdout
