"""The papers' sweeps (experiments/sweeps/zero_shot.yaml, hap.yaml, hap_ablation.yaml): their job
counts, their jobs run end to end on fake copies of the five benchmarks, and the accelerator-hours
estimate that `dg-heads sweep` prints before queuing."""

import json
import time

import pytest

from dg_heads.errors import DGHeadsError
from dg_heads.sweep import estimate, job_cost, jobs_of, load_spec
from tests.conftest import REPO, run_main

SWEEPS = REPO / "experiments/sweeps"
DOMAINS = {"pacs": 4, "vlcs": 4, "office_home": 4, "terra_incognita": 4, "domain_net": 6}  # 22 held-out domains


def _jobs(name, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the specs' config paths are relative to the repository, where jobs start
    return jobs_of(load_spec(SWEEPS / f"{name}.yaml"), tmp_path / "runs")


def _count(jobs):
    counts = {}
    for job in jobs:
        counts[job.method, job.dataset] = counts.get((job.method, job.dataset), 0) + 1
    return counts


def _arg(job, key):
    argv = job.argv()
    return argv[len(argv) - 1 - argv[::-1].index(key) + 1]  # the last one wins, as in the CLI


def test_the_paper_sweeps_expand_to_every_domain_and_seed(tmp_path, monkeypatch):
    """Hand counts: every held-out domain of each benchmark x 3 trial seeds x one setting per method."""
    zero_shot = _jobs("zero_shot", tmp_path, monkeypatch)
    assert _count(zero_shot) == {("zero_shot", d): n * 3 for d, n in DOMAINS.items()} and len(zero_shot) == 66
    assert all(j.argv()[1] == "test" and "--test_after_fit" not in j.argv() for j in zero_shot)

    hap = _jobs("hap", tmp_path, monkeypatch)
    methods = ["hap", "lora", "finetune", "linear_probe", "aat_scan", "aat_ga", "aat_bp"]
    assert _count(hap) == {(m, d): n * 3 for m in methods for d, n in DOMAINS.items()} and len(hap) == 7 * 66
    assert {j.trial_seed for j in hap} == {0, 1, 2}
    steps = {(j.method, j.dataset): _arg(j, "--trainer.max_steps") for j in hap}
    assert steps["hap", "domain_net"] == "15000" and steps["hap", "pacs"] == "5000"
    assert steps["finetune", "terra_incognita"] == "5000"
    assert steps["aat_bp", "domain_net"] == "1000" and steps["aat_bp", "pacs"] == "1000"  # its own run length wins

    ablation = _jobs("hap_ablation", tmp_path, monkeypatch)
    rows = ["zero_shot", "ha_lora_only", "gating_only", "hap", "plain_lora_gating"]
    expected = {(m, d): DOMAINS[d] * 3 for m in rows for d in ("office_home", "domain_net")}
    expected |= {("mmd_on_lora", "office_home"): 12, ("mmd_on_both", "office_home"): 12}  # OfficeHome only
    assert _count(ablation) == expected and len(ablation) == 5 * 30 + 2 * 12
    overlay = {j.method: j.configs[-1] for j in ablation}
    assert overlay["ha_lora_only"] == "configs/method/hap_variants/ha_lora_only.yaml"
    assert overlay["mmd_on_both"] == "configs/method/hap_variants/mmd_on_both.yaml"

    pacs = _jobs("pacs", tmp_path, monkeypatch)  # the older example: unchanged, and `fit` as before
    assert len(pacs) == 4 * 3 * 2 * 2 + 4 * 3 and all(j.argv()[1] == "fit" and "subcommand" not in j.identity()
                                                      for j in pacs)


def test_new_spec_keys_name_the_bad_value(tmp_path):
    spec = tmp_path / "spec.yaml"
    base = (f"configs: [{REPO}/configs/trainer/gpu.yaml, '{REPO}/configs/data/{{dataset}}.yaml', "
            f"'{REPO}/configs/method/{{method}}.yaml']\nslurm: {{gpus_per_node: 1}}\n")
    spec.write_text(base + "methods: {zero_shot: {subcommand: validate}}\ndatasets: {pacs: [sketch]}\n")
    with pytest.raises(DGHeadsError, match=r"zero_shot.subcommand 'validate': expected one of \['fit', 'test'\]"):
        load_spec(spec)
    spec.write_text(base + "methods: {hap: {datasets: [vlcs]}}\ndatasets: {pacs: [sketch]}\n")
    with pytest.raises(DGHeadsError, match=r"methods.hap.datasets names \['vlcs'\], not among the spec's datasets"):
        load_spec(spec)
    spec.write_text(base + "methods: {hap: }\ndatasets: {pacs: {domain: [sketch]}}\n")
    with pytest.raises(DGHeadsError, match=r"datasets.pacs: expected a list of test domains, `all`, or a mapping"):
        load_spec(spec)


# ----------------------------------------------------------------- the jobs, end to end
# Each job's own command line, then what makes it a seconds-long CPU run (later arguments win).
SMALL = ["--model.init_args.clip.model_name", "dg-tiny-vit", "--model.init_args.clip.pretrained", "null",
         "--model.init_args.clip.templates", '["a photo of a {}."]',
         "--trainer.accelerator", "cpu", "--trainer.precision", "32-true", "--trainer.max_steps", "1",
         "--trainer.val_check_interval", "1", "--trainer.log_every_n_steps", "1", "--trainer.num_sanity_val_steps", "0",
         "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1",
         "--data.init_args.image_size", "32", "--data.init_args.batch_size_per_domain", "2",
         "--data.init_args.eval_batch_size", "16", "--data.init_args.num_workers", "0"]
SMALLER = {"aat_ga": ["--model.init_args.search.ga.population", "4", "--model.init_args.search.ga.generations", "1"],
           "aat_scan": ["--model.init_args.search.max_scoring_batches", "1"],
           "aat_bp": ["--model.init_args.search.max_scoring_batches", "1"]}


# Which (method, dataset) of each sweep runs end to end: every method of the three sweeps once and every
# dataset at least once (checked below). A method's and a dataset's config files compose alike whatever
# the other is, so the full product (35 runs for hap.yaml) would test little more, at many times the CI
# time. DomainNet (345 classes, 6 domains) only with zero-shot (nothing trains: a trained method there
# took 15-45 s a job); the ablation's `zero_shot` and `hap` rows are zero_shot.yaml's and hap.yaml's
# method configs (checked below), so they run once, in those sweeps.
PLAN = {"zero_shot": [("zero_shot", "domain_net")],
        "hap": [("hap", "pacs"), ("lora", "vlcs"), ("finetune", "terra_incognita"), ("linear_probe", "pacs"),
                ("aat_scan", "vlcs"), ("aat_ga", "pacs"), ("aat_bp", "terra_incognita")],
        "hap_ablation": [("ha_lora_only", "office_home"), ("gating_only", "office_home"),
                         ("plain_lora_gating", "office_home"), ("mmd_on_lora", "office_home"),
                         ("mmd_on_both", "office_home")]}


def test_the_planned_jobs_cover_every_method_and_dataset_of_the_paper_sweeps(tmp_path, monkeypatch):
    """PLAN names jobs its sweeps have and runs every method and dataset of the three sweeps; a
    method in two sweeps (zero_shot, hap) has the same subcommand and method config files in both,
    so running it in one covers the other."""
    every, files = set(), {}
    for sweep, plan in PLAN.items():
        jobs = _jobs(sweep, tmp_path, monkeypatch)
        assert set(plan) <= {(j.method, j.dataset) for j in jobs}, sweep
        every |= {(j.method, j.dataset) for j in jobs}
        for job in jobs:  # all but the dataset's config file
            files.setdefault(job.method, set()).add(
                (job.subcommand, tuple(c for c in job.configs if not c.startswith("configs/data/"))))
    assert {method: len(f) for method, f in files.items() if len(f) != 1} == {}
    ran = {pair for plan in PLAN.values() for pair in plan}
    assert {m for m, _ in ran} == {m for m, _ in every} and {d for _, d in ran} == {d for _, d in every}
    assert len(ran) == len({m for m, _ in every}) == 13  # one job a method


@pytest.mark.slow
@pytest.mark.parametrize("sweep", ["zero_shot", "hap", "hap_ablation"])
def test_every_method_and_dataset_of_the_paper_sweeps_runs(sweep, five_benchmarks, tmp_path, monkeypatch):
    """Every method and every dataset of the shipped sweeps (PLAN) run through the real CLI in this
    process (no interpreter start-up), each job with its own command line and SMALL after it: it
    finishes (`done`) with the test accuracy `collect` reads, beside the validation accuracy it
    selects by for a trained method."""
    jobs = _jobs(sweep, tmp_path, monkeypatch)
    started = time.monotonic()
    firsts = {}
    for job in jobs:  # each the first held-out domain and trial seed of its (method, dataset)
        firsts.setdefault((job.method, job.dataset), job)
    for job in (firsts[pair] for pair in PLAN[sweep]):
        argv = [*job.argv()[1:], *SMALL, *SMALLER.get(job.method, []), "--data.init_args.root", str(five_benchmarks)]
        result = run_main(*argv, cwd=tmp_path)
        assert result.returncode == 0, f"{job.method} on {job.dataset}: {result.stderr[-3000:]}"
        assert (job.run_dir / "done").exists(), f"{job.method} on {job.dataset}: no done marker"
        metrics = json.loads((job.run_dir / "version_0/metrics_test.json").read_text())
        assert 0.0 <= metrics["test/acc"] <= 1.0
        if job.subcommand == "fit":  # the selected checkpoint's validation beside its test: what collect selects by
            assert "val/acc" in metrics
    print(f"{sweep}: {len(PLAN[sweep])} jobs in {time.monotonic() - started:.0f} s")


# ------------------------------------------------------------ accelerator-hours
FAKE_TIMES = {"entries": [
    {"kind": "train_step", "device": "Fake GPU", "model": "ViT-B-16", "method": "hap", "precision": "bf16-mixed",
     "images_per_step": 48, "s_per_step": 0.5, "date": "2026-01-01"},
    {"kind": "train_step", "device": "Fake GPU", "model": "ViT-B-16", "method": "hap", "precision": "bf16-mixed",
     "images_per_step": 160, "s_per_step": 9.0, "date": "2026-01-01"},  # nearer DomainNet's batch, not PACS's
    {"kind": "train_step", "device": "Fake GPU", "model": "ViT-B-16", "method": "hap", "precision": "32-true",
     "images_per_step": 96, "s_per_step": 7.0, "date": "2026-01-01"},  # another precision: not a PACS bf16 figure
    {"kind": "eval", "device": "Fake GPU", "model": "ViT-B-16", "precision": "bf16-mixed", "batch": 256,
     "s_per_image": 0.001, "date": "2026-01-01"},
    {"kind": "search", "device": "Fake GPU", "model": "ViT-B-16", "precision": "bf16-mixed", "batch": 128,
     "blocks": 12, "heads": 12, "level_bytes_per_image": 197 * 768 * 2, "s_fill_per_image": 0.002,
     "s_score_per_image": 0.0013, "s_score_overhead_per_image": 0.0001, "date": "2026-01-01"},
]}


def _estimate_spec(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"runs_dir: {tmp_path / 'runs'}\n"
                    f"configs: [{REPO}/configs/trainer/gpu.yaml, '{REPO}/configs/data/{{dataset}}.yaml', "
                    f"'{REPO}/configs/method/{{method}}.yaml']\n"
                    "methods: {hap: , lora: , zero_shot: {subcommand: test}, aat_scan: , aat_ga: }\n"
                    "datasets: {pacs: [sketch]}\nslurm: {gpus_per_node: 1}\n")
    times = tmp_path / "step_times.json"
    times.write_text(json.dumps(FAKE_TIMES))
    return spec, times


def test_the_estimate_is_steps_times_the_measured_step_plus_the_evaluated_images(tmp_path, monkeypatch):
    """By hand, HAP on PACS with sketch held out (gpu.yaml: 5000 steps, validation every 500,
    bf16-mixed; pacs.yaml: 32 images per domain): 3 source domains x 32 = 96 images a step; the
    nearest measured batch is 48 images at 0.5 s, so 1.0 s a step: 5000 s. Evaluation: the source
    `out` splits are 0.2 x (2048 + 2344 + 1670) = 1212.4 images, validated 5000 / 500 = 10 times
    and once more for the selected checkpoint, then sketch's 3929 images are tested: 11 x 1212.4 +
    3929 = 17265.4 images x 1 ms = 17.2654 s. In all 5017.2654 s = 1.3937 h. Zero-shot: 3929 x
    1 ms = 3.929 s. Plain LoRA: no measured figure.

    AAT's searches (aat_*.yaml: 4 scoring batches of 128 images per source domain, a 4 GB cache):
    the `out` splits hold int(0.2 x count) = 409, 468 and 334 images, all under 512: 1211 images.
    One block's input is 197 x 768 x 2 bytes, 366,438,912 for the 1211: 10 of the 13 levels fit,
    blocks (0, 1, 2, 3, 4, 6, 7, 8, 9, 10) kept (0, 12/10, 24/10, ... rounded down). A mask whose
    first ablated block is 0 ... 11 runs from the kept block at or before it: 12, 11, 10, 9, 8, 8, 6,
    5, 4, 3, 2, 2 blocks (80 in all); the unablated one 2 (from block 10). Scan: 145 masks, 2 + 12 x
    80 = 962 blocks an image; at 0.1 ms a mask's own work and (1.3 - 0.1) / 12 = 0.1 ms a block,
    after a 2 ms fill: 2 + 14.5 + 96.2 = 112.7 ms an image, x 1211 = 136.4797 s, + the searched
    model's validation and test, 1212.4 + 3929 = 5141.4 images x 1 ms: 141.6211 s. GA (24 x 15, 2
    elites): at most 24 + 15 x 22 = 354 masks, 2 + 353 x 12 = 4238 blocks: 2 + 35.4 + 423.8 = 461.2
    ms an image, x 1211 = 558.5132 s, + 5.1414 s = 563.6546 s. An older file's hand-written
    `search` entry (s_per_search 600 s for aat_scan) is read as it says: 600 + 5.1414 s."""
    monkeypatch.chdir(REPO)
    spec_file, times = _estimate_spec(tmp_path)
    spec = load_spec(spec_file)
    jobs = {j.method: j for j in jobs_of(spec, tmp_path / "runs")}
    entries = FAKE_TIMES["entries"]
    assert job_cost(jobs["hap"], entries).seconds == pytest.approx(5017.2654)
    assert job_cost(jobs["zero_shot"], entries).seconds == pytest.approx(3.929)
    missing = job_cost(jobs["lora"], entries).missing
    assert missing == "no measured step time for ViT-B-16/lora (bf16-mixed) on a GPU yet"
    assert job_cost(jobs["aat_scan"], entries).seconds == pytest.approx(141.6211)
    assert job_cost(jobs["aat_ga"], entries).seconds == pytest.approx(563.6546)
    legacy = [*entries[:-1], {"kind": "search", "device": "Old GPU", "model": "ViT-B-16", "method": "aat_scan",
                              "precision": "bf16-mixed", "s_per_search": 600.0, "date": "2025-01-01"}]
    assert job_cost(jobs["aat_scan"], legacy).seconds == pytest.approx(605.1414)

    result = run_main("sweep", str(spec_file), "--step-times", str(times), "--no-preflight", "--no-check",
                      cwd=REPO)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "5 jobs in" in out
    # (5017.2654 + 3.929 + 141.6211 + 563.6546) / 3600 = 1.5907 h
    assert f"estimate: 1.6 accelerator-hours for 4 of the 5 jobs to run, from the step times measured on Fake GPU " \
           f"in {times}" in out
    assert "  hap                pacs                1 jobs x    1.39 h =      1.4 h" in out
    assert "  aat_scan           pacs                1 jobs x    0.04 h =      0.0 h  (first job: search 1,211 images" \
        in out
    assert "  aat_ga             pacs                1 jobs x    0.16 h =      0.2 h" in out
    assert ("  not estimated (1 job(s)): no measured step time for ViT-B-16/lora (bf16-mixed) on a GPU yet: "
            "run `make gpu-check` on a GPU node") in out
    assert out.index("estimate:") < out.index("sbatch ")  # printed before the queuing line

    none = run_main("sweep", str(spec_file), "--step-times", str(tmp_path / "absent.json"), "--no-preflight",
                    "--no-check", "--runs-dir", str(tmp_path / "runs2"), cwd=REPO)
    assert none.returncode == 0, none.stderr
    assert f"estimate: none of the 5 jobs to run has a measured step time ({tmp_path / 'absent.json'} does not exist)" \
        in none.stdout
    assert ("  not estimated (2 job(s)): no measured search time for ViT-B-16 (bf16-mixed) on a GPU yet: "
            "run `make gpu-check` on a GPU node") in none.stdout
    assert "no measured step time for ViT-B-16/hap (bf16-mixed) on a GPU yet: run `make gpu-check` on a GPU node" \
        in none.stdout


def test_the_estimate_scales_to_the_jobs_batch_and_counts_every_process(tmp_path, monkeypatch):
    """DomainNet, clipart held out, 15000 steps (as hap.yaml): 5 source domains x 32 = 160 images, the
    160-image entry exactly: 9.0 s a step, 135000 s. Evaluation: 0.2 x (51605 + 72266 + 172500 +
    172947 + 69128) = 107689.2 images, validated 15000 / 1000 = 15 + 1 times, then clipart's 48129:
    16 x 107689.2 + 48129 = 1771156.2 images x 1 ms = 1771.1562 s on one GPU. The spec's DDP layout
    (2 nodes x 4 GPUs) runs 8 processes, each with a batch of its own, while the evaluated images
    are shared out over them: 135000 + 1771.1562 / 8 = 135221.3945 s a job, 8 x that / 3600 =
    300.492 accelerator-hours. A job longer than the spec's slurm.time is pointed out."""
    monkeypatch.chdir(REPO)
    spec_file = tmp_path / "dn.yaml"
    spec_file.write_text(f"configs: [{REPO}/configs/trainer/gpu.yaml, '{REPO}/configs/data/{{dataset}}.yaml', "
                         f"'{REPO}/configs/method/{{method}}.yaml']\nmethods: {{hap: }}\n"
                         "datasets: {domain_net: {domains: [clipart], args: [--trainer.max_steps, '15000', "
                         "--trainer.val_check_interval, '1000']}}\nslurm: {gpus_per_node: 4, nodes: 2, "
                         "time: '12:00:00'}\n")
    spec = load_spec(spec_file)
    (job,) = jobs_of(spec, tmp_path / "runs")
    assert job_cost(job, FAKE_TIMES["entries"]).seconds == pytest.approx(136771.1562)  # one process
    assert job_cost(job, FAKE_TIMES["entries"], processes=8).seconds == pytest.approx(135221.3945)
    lines = estimate(spec, [job], FAKE_TIMES["entries"], tmp_path / "t.json")
    assert lines[0].startswith("estimate: 300.5 accelerator-hours for 1 of the 1 jobs to run (8 processes each)")
    # one job's own hours, 135221.3945 / 3600 = 37.56, against the array task's time limit
    assert lines[-1] == "  note: the longest job (hap on domain_net, 37.6 h) is longer than slurm.time 12:00:00"


def test_the_search_cost_is_counted_from_the_settings_as_the_searches_run():
    """Hand counts. ViT-B/16 (12 blocks x 12 heads), every block's input cached: the scan scores
    the unablated mask (no block runs: the last block's output is cached) and the 144 heads alone,
    a head of block b running the 12 - b blocks from b: 12 x (12 + 11 + ... + 1) = 936 blocks an
    image, after a fill of 12; 948 / 12 = 79 passes. The GA's defaults (24 x 15, 2 elites): 24 x 16
    = 384 scorings, at most 24 + 15 x 22 = 354 new masks, 353 of them running at most 12 blocks.
    A 4 x 2 grid caching blocks 0 and 2 only: a mask runs from block 0 when its first ablated block
    is 0 or 1 (4 blocks), from block 2 otherwise (2, the unablated mask too): 2 + 2 x (4 + 4 + 2 +
    2) = 26, and the fill stops at block 2. Then a real scorer (the tiny CLIP, 4 x 4) running the
    scan and a GA does exactly, or for the GA at most, what was counted."""
    import torch

    from dg_heads import heads
    from dg_heads.backbone import CLIPSpec, create_clip
    from dg_heads.methods.aat import GASpec, MaskScorer, genetic_search, scan
    from dg_heads.methods.aat.scorer import search_cost

    full = search_cost("scan", 12, 12)
    assert (full.evaluations, full.masks, full.block_runs, full.fill_blocks, full.exact) == (145, 145, 936, 12, True)
    assert full.passes == 79
    ga = search_cost("ga", 12, 12, GASpec())
    assert (ga.evaluations, ga.masks, ga.block_runs, ga.exact) == (384, 354, 353 * 12, False)
    partial = search_cost("scan", 4, 2, levels=(0, 2))
    assert (partial.masks, partial.block_runs, partial.fill_blocks) == (9, 26, 2)
    assert search_cost("ga", 4, 2, GASpec(population=5, generations=2, elitism=1), levels=(0, 2)).block_runs == \
        2 + (5 + 2 * 4 - 1) * 4

    torch.manual_seed(0)
    model = heads.convert(create_clip(CLIPSpec())[0].eval())
    images, labels = torch.randn(2, 3, 32, 32), torch.arange(2)
    spec = GASpec(population=6, generations=3, init_density=0.3, elitism=2)
    for levels in (None, (0, 2)):
        scorer = MaskScorer(model, lambda f: f[:, :2], levels=levels)
        scorer.add(images, labels, 0)
        scan(scorer, progress=False)
        counted = search_cost("scan", 4, 4, levels=levels)
        assert scorer.evaluations == len(scorer.scores) == counted.masks
        assert scorer.block_forwards == 2 * (counted.fill_blocks + counted.block_runs)
        assert scorer.cost == pytest.approx(counted.passes)
        scorer = MaskScorer(model, lambda f: f[:, :2], levels=levels)
        scorer.add(images, labels, 0)
        genetic_search(scorer, spec, progress=False)
        counted = search_cost("ga", 4, 4, spec, levels=levels)
        assert scorer.evaluations == counted.evaluations == 24
        assert len(scorer.scores) <= counted.masks == 6 + 3 * 4
        assert scorer.block_forwards <= 2 * (counted.fill_blocks + counted.block_runs)


def test_the_step_time_bench_writes_what_the_estimate_reads(tmp_path, monkeypatch):
    """experiments/bench_step_time.py (`make gpu-check`'s last step), here on the CPU with the tiny
    CLIP and one timed step: its entries (device, model, method, precision, batch, s/step, date) are
    what `dg-heads sweep` estimates from; an entry measured again replaces the old one, another
    device's is kept. AAT's searches (scan and GA) get one `search` entry for the model and
    precision (cache fill, a mask, per image; the grid and a cached block's bytes), which an
    aat_scan job's estimate reads; aat_bp trains: a step entry of its own."""
    from experiments.bench_step_time import main as bench
    from experiments.bench_step_time import write

    monkeypatch.chdir(REPO)
    out = tmp_path / "measured/step_times.json"
    argv = ["--methods", "hap", "zero_shot", "aat_scan", "aat_ga", "aat_bp", "--model", "dg-tiny-vit",
            "--device", "cpu", "--precision", "32-true",
            "--steps", "1", "--warmup", "0", "--per-domain", "2", "--domains", "3", "--eval-batch", "4",
            "--out", str(out)]
    bench(argv)
    entries = json.loads(out.read_text())["entries"]
    assert sorted((e["kind"], e.get("method") or "") for e in entries) == [
        ("eval", ""), ("search", ""), ("train_step", "aat_bp"), ("train_step", "hap")]
    search = next(e for e in entries if e["kind"] == "search")
    # the tiny CLIP: 4 blocks x 4 heads; a block's input 65 tokens x 64 wide in fp32
    assert (search["device"], search["model"], search["precision"], search["batch"]) == \
        ("cpu", "dg-tiny-vit", "32-true", 4)
    assert (search["blocks"], search["heads"], search["level_bytes_per_image"]) == (4, 4, 65 * 64 * 4)
    fill, score, overhead = (search[k] for k in ("s_fill_per_image", "s_score_per_image", "s_score_overhead_per_image"))
    assert fill > 0 and score > 0 and overhead > 0
    step = next(e for e in entries if e["kind"] == "train_step" and e["method"] == "hap")
    assert step["device"] == "cpu" and step["model"] == "dg-tiny-vit" and step["precision"] == "32-true"
    assert step["images_per_step"] == 6 and step["s_per_step"] > 0 and step["date"]
    write(out, [{**step, "s_per_step": 123.0}, {**step, "device": "another"}])  # measured again; another GPU
    merged = json.loads(out.read_text())["entries"]
    steps = {e["device"]: e["s_per_step"] for e in merged if e["kind"] == "train_step"}
    assert len(merged) == 5 and steps == {"cpu": 123.0, "another": step["s_per_step"]}

    spec = tmp_path / "spec.yaml"  # HAP on the tiny CLIP, 10 steps: the bench's figures apply
    spec.write_text(f"configs: [{REPO}/configs/data/pacs.yaml, {REPO}/configs/method/hap.yaml, "
                    f"{REPO}/configs/trainer/demo.yaml]\nmethods: {{hap: }}\ndatasets: {{pacs: [sketch]}}\n"
                    "args: [--trainer.max_steps, '10', --trainer.val_check_interval, '5', "
                    "--data.init_args.batch_size_per_domain, '2']\nslurm: {cpu_only: true}\n")
    (job,) = jobs_of(load_spec(spec), tmp_path / "runs")
    # 10 steps x the measured step (6 images, as measured) + (2 + 1) validations of 1212.4 images + 3929 tested
    eval_entry = next(e for e in entries if e["kind"] == "eval")
    expected = 10 * step["s_per_step"] + (3 * 1212.4 + 3929) * eval_entry["s_per_image"]
    assert job_cost(job, entries).seconds == pytest.approx(expected)

    spec.write_text(f"configs: [{REPO}/configs/data/pacs.yaml, {REPO}/configs/method/aat_scan.yaml, "
                    f"{REPO}/configs/trainer/demo.yaml]\nmethods: {{aat_scan: }}\ndatasets: {{pacs: [sketch]}}\n"
                    "slurm: {cpu_only: true}\n")
    (job,) = jobs_of(load_spec(spec), tmp_path / "runs")
    # 409 + 468 + 334 scoring images (each under 4 x 128), every level cached (1211 x 5 x 16640 bytes):
    # the fill, then 17 masks (the unablated one, 16 heads) running 0 + 4 x (4 + 3 + 2 + 1) = 40 blocks
    per_image = fill + 17 * overhead + 40 * (score - overhead) / 4
    expected = 1211 * per_image + (1212.4 + 3929) * eval_entry["s_per_image"]
    assert job_cost(job, entries).seconds == pytest.approx(expected)
