"""`dg-heads atlas` through the real CLI on the tiny CLIP: a HAP checkpoint against zero-shot
(bf16 autocast on the CPU), the page in a real browser, 2 processes = 1, bad input."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from tests.conftest import REPO, demo_configs, run_cli, run_main

BLOCKS, HEADS = 4, 4  # dg-tiny-vit
FIT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "1",
       "--data.init_args.num_workers", "0"]
SMALL = ["--images_per_domain", "12", "--batch_size", "8"]


@pytest.fixture(scope="module")
def hap_atlas(data_root, tmp_path_factory):
    """A HAP run on the demo data, then its atlas against zero-shot CLIP under bf16 autocast."""
    work = tmp_path_factory.mktemp("atlas")
    fit = run_cli("fit", *demo_configs("hap"), *FIT, cwd=work)
    assert fit.returncode == 0, fit.stderr[-3000:]
    run = work / "runs/rotated_digits/hap/version_0"
    atlas = run_cli("atlas", str(run / "checkpoints/last.ckpt"), "--compare", "zero_shot", "--precision",
                    "bf16-mixed", "--words_blocks", "2", *SMALL, cwd=work)
    assert atlas.returncode == 0, atlas.stderr[-3000:]
    return run, atlas


@pytest.mark.slow
def test_atlas_of_a_hap_checkpoint_against_zero_shot(hap_atlas):
    run, result = hap_atlas
    out = run / "atlas"
    assert f"wrote {out / 'atlas.html'}" in result.stdout
    atlas = json.loads((out / "atlas.json").read_text())
    assert atlas["meta"]["domains"] == ["0", "15", "30", "45", "60"]  # the held-out 75 is not read
    assert atlas["meta"]["images"] == 5 * 12 and atlas["meta"]["precision"] == "bf16-mixed"
    measures = {"head_accuracy", "mean_ablation", "zero_ablation", "domain_mmd", "domain_probe", "contribution_norm"}
    assert set(atlas["measures"]) == measures
    for matrix in atlas["measures"].values():
        assert len(matrix) == BLOCKS and all(len(row) == HEADS and None not in row for row in matrix)
    assert atlas["decomposition_error"] < 0.1  # bf16: the terms still sum to the embedding
    gates = atlas["views"]["gate"]  # HAP's own view: H * softmax(theta) per block
    assert all(abs(sum(row) - HEADS) < 1e-3 for row in gates) and "lora_norm" in atlas["views"]
    assert set(atlas["compare"]["difference"]) == measures and "gate" in atlas["compare"]["summary"]
    assert set(atlas["words"]) == {"general", "class prompts"}
    assert set(atlas["words"]["general"]) == {f"{b},{h}" for b in (2, 3) for h in range(HEADS)}  # the last 2 blocks
    assert all(len(w) == 5 for w in atlas["words"]["class prompts"].values())
    rows = list(csv.DictReader((out / "atlas.csv").open()))
    assert len(rows) == BLOCKS * HEADS
    assert {"block", "head", "gate", "diff domain_mmd", "words (general)"} <= set(rows[0])
    for name in ("head_accuracy", "domain_mmd", "view_gate", "diff_domain_mmd"):
        assert Image.open(out / f"{name}.png").size[0] > 100
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run)).Reload()  # the run's own TensorBoard log
    assert {"atlas/domain_mmd", "atlas/view_gate", "atlas/diff_head_accuracy"} <= set(events.Tags()["images"])
    page = (out / "atlas.html").read_text()
    # self-contained: no address the browser would fetch (the SVG namespace is an XML name, never fetched;
    # this test reads the page's text and reaches no network)
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page


@pytest.fixture(scope="module")
def browser() -> str:
    """Headless Chromium, or a skip saying why (a failure when DG_HEADS_REQUIRE_BROWSER=1, as in CI);
    listed before `hap_atlas`, so a skip costs no training run."""
    found = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if found is None:
        if os.environ.get("DG_HEADS_REQUIRE_BROWSER") == "1":
            pytest.fail("DG_HEADS_REQUIRE_BROWSER=1 but no chromium binary is on PATH")
        pytest.skip("no chromium binary on PATH (apt-get install chromium); DG_HEADS_REQUIRE_BROWSER=1 makes this fail")
    return found


@pytest.mark.slow
def test_the_page_renders_in_headless_chromium(browser, hap_atlas, tmp_path):
    page = (hap_atlas[0] / "atlas/atlas.html").as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,1600"]
    shot = tmp_path / "atlas.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", page], capture_output=True, timeout=120, check=True)
    image = Image.open(shot).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    non_white = sum(count for count, rgb in colours if rgb != (255, 255, 255))
    assert len(colours) > 50 and non_white > 0.05 * image.size[0] * image.size[1]  # heatmaps drawn, not blank
    dom = subprocess.run([browser, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    table = re.search(r'<table[^>]*id="heads".*?<tbody>(.*?)</tbody>', dom, re.S)
    assert table is not None and table.group(1).count("<tr>") == BLOCKS * HEADS
    assert dom.count("<svg") >= 6 + 2 + 6  # measures, HAP's views, the differences


@pytest.mark.slow
def test_two_processes_give_the_atlas_of_one(data_root, tmp_path):
    configs = [*(c for c in demo_configs("zero_shot")), "--set", "data.init_args.num_workers=0", *SMALL,
               "--images_per_domain", "9", "--words_blocks", "1"]
    one = run_cli("atlas", *configs, "--out", str(tmp_path / "one"), cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "dg_heads", "atlas", *configs, "--out", str(tmp_path / "two")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (json.loads((tmp_path / name / "atlas.json").read_text()) for name in ("one", "two"))
    assert a["meta"]["processes"] == 1 and b["meta"]["processes"] == 2 and a["meta"]["images"] == b["meta"]["images"]
    for name, matrix in a["measures"].items():
        for row_a, row_b in zip(matrix, b["measures"][name]):
            assert row_b == pytest.approx(row_a, abs=2e-5), name
    assert a["base_accuracy"] == pytest.approx(b["base_accuracy"], abs=1e-6)
    for pool, per_head in a["words"].items():
        for head, words in per_head.items():
            other = b["words"][pool][head]
            assert [t for t, _ in other] == [t for t, _ in words]  # the same texts, shares to float rounding
            assert [s for _, s in other] == pytest.approx([s for _, s in words], abs=1e-6)


def test_bad_input_is_one_error_line(tmp_path):
    missing = run_main("atlas", str(tmp_path / "nope.ckpt"), cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
        f"error: checkpoint {tmp_path / 'nope.ckpt'} does not exist"]
    pool = tmp_path / "pool.txt"
    pool.write_text("# only a comment\n")
    bad_pool = run_main("atlas", *demo_configs("zero_shot"), "--text_pool", str(pool), cwd=tmp_path)
    assert bad_pool.returncode == 2 and bad_pool.stderr.strip().splitlines() == [
        f"error: text pool file {pool} has 0 description(s); expected one per line, at least 2"]
    no_data = run_main("atlas", str(REPO / "configs/method/zero_shot.yaml"), "--set",
                       "model.init_args.clip.model_name=dg-tiny-vit", "--set", "model.init_args.clip.pretrained=null",
                       cwd=tmp_path)
    assert no_data.returncode == 2 and "no data" in no_data.stderr and "--data" in no_data.stderr
    for flags, line in [  # the parser's own refusals: one line too (argparse printed its usage first)
        (["--precision", "16"], "error: dg-heads atlas: --precision: Expected a typing.Literal['32', 'bf16-mixed']. "
                                "Got value: 16"),
        (["--batch_size", "0"], "error: dg-heads atlas: --batch_size: Not of type PositiveInt: 0 does not conform "
                                "to restriction v>0"),
        (["--imges_per_domain", "3"], "error: dg-heads atlas: unrecognized arguments: --imges_per_domain 3; did you "
                                      "mean --images_per_domain?"),
    ]:
        bad = run_main("atlas", "model.ckpt", *flags, cwd=tmp_path)
        assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [line], bad.stderr


def test_every_documented_flag_spelling_is_read_and_listed_by_help(tmp_path):
    """The spellings of the README, the Makefile, the tests and bench_atlas (argparse's, kept on
    jsonargparse): MODEL as a positional list, repeated --config / --data / --set, --held_out as
    a bare switch; `--help` lists each with its help."""
    from dg_heads.atlas.cli import parse_args

    pool = tmp_path / "pool.txt"
    pool.write_text("a red square\na blue circle\n")  # read at once: a bad pool fails before any model
    args = parse_args(["a.yaml", "b.yaml", "--config", "c.yaml", "--config", "d.yaml", "--data", "e.yaml", "--data",
                       "f.yaml", "--set", "data.init_args.test_domains=[75]", "--set", "data.init_args.root=/data",
                       "--held_out", "--compare", "zero_shot", "--precision", "bf16-mixed", "--out", "o",
                       "--images_per_domain", "3", "--ablation_blocks", "-1", "--words_blocks", "0", "--basis_size",
                       "2", "--text_pool", str(pool), "--batch_size", "8", "--num_workers", "1", "--accelerator",
                       "cpu"])
    assert [str(p) for p in args.model] == ["a.yaml", "b.yaml", "c.yaml", "d.yaml"]  # MODEL's, then --config's
    assert [str(p) for p in args.data] == ["e.yaml", "f.yaml"]
    assert args.set == ["data.init_args.test_domains=[75]", "data.init_args.root=/data"]
    assert (args.held_out, args.compare, args.precision, str(args.out), args.text_pool, args.accelerator) == (
        True, "zero_shot", "bf16-mixed", "o", str(pool), "cpu")
    assert (args.images_per_domain, args.ablation_blocks, args.words_blocks, args.basis_size, args.batch_size,
            args.num_workers) == (3, -1, 0, 2, 8, 1)
    defaults = parse_args(["run/last.ckpt"])
    assert (defaults.held_out, defaults.images_per_domain, defaults.ablation_blocks, defaults.precision) == (
        False, 64, -1, "32")
    shown = run_main("atlas", "--help", cwd=tmp_path)
    assert shown.returncode == 0
    for flag in ("--config", "--data", "--set", "--held_out", "--compare", "--out", "--images_per_domain",
                 "--ablation_blocks", "--words_blocks", "--basis_size", "--text_pool", "--batch_size",
                 "--num_workers", "--precision", "--accelerator"):
        assert re.search(rf"^  {flag}\b.*\n?.*\w", shown.stdout, re.MULTILINE), flag
    assert "zero-ablate the heads of the last N blocks" in " ".join(shown.stdout.split())


@pytest.mark.slow
def test_an_aat_mask_is_applied_and_mapped(data_root, tmp_path):
    """An AAT model with a saved mask: its heads are ablated in the decomposition (the terms
    still sum to its embedding), the mask is its view, and zero-ablating a head it already
    ablates loses nothing; the scorer's cache needs a pass of its own (without the mask)."""
    mask = tmp_path / "ablation.json"
    mask.write_text('{"3": [1], "1": [0]}')
    result = run_cli("atlas", *demo_configs("aat_scan"), "--set", f"model.init_args.mask={mask}",
                     "--set", "data.init_args.num_workers=0", "--images_per_domain", "4", "--words_blocks", "0",
                     "--out", str(tmp_path / "atlas"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    atlas = json.loads((tmp_path / "atlas/atlas.json").read_text())
    assert atlas["views"]["aat_mask"] == [[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]]
    assert atlas["measures"]["zero_ablation"][3][1] == 0 and atlas["measures"]["zero_ablation"][1][0] == 0
    norms = atlas["measures"]["contribution_norm"]  # an ablated head writes nothing
    assert norms[3][1] == norms[1][0] == 0 and min(v for row in norms for v in row if v) > 0.01
    assert atlas["decomposition_error"] < 1e-4 and atlas["words"] == {}
    # 1 (decomposition) + 1 (the cache, unmasked) + the scan from block 1 (or 0), masks already scored skipped:
    # base 3/4 + block 0: 4 x 1 + blocks 1 and 3: 3 x 3/4 each + block 2: 4 x 3/4
    assert atlas["cost"]["passes_over_data"] == pytest.approx(1 + 1 + 0.75 + 4 + 2.25 + 3 + 2.25)


# ------------------------------------------------------------------ in-process runs (no fit)
POOL = ["a red square on grey", "a blue circle", "thin black strokes", "a blurry photo", "a rotated shape",
        "bright yellow light"]
QUICK_ATLAS = ["--set", "data.init_args.num_workers=0", "--images_per_domain", "3", "--batch_size", "8"]
SLEEP = 2.0  # seconds the first scorer's construction (setup, before the first image) is made to take


@pytest.fixture(scope="module")
def pool_atlas(data_root, tmp_path_factory):
    """Zero-shot tiny CLIP against itself, the words from a user's pool file; MODEL's scorer's
    construction (part of its setup) made SLEEP seconds slower, to see where the timer puts it."""
    import time

    from dg_heads.atlas import cli
    from dg_heads.methods.aat.scorer import MaskScorer

    built = []

    class SlowScorer(MaskScorer):
        def __init__(self, *args, **kwargs):
            if not built:  # MODEL's (measured first), not the compared model's
                time.sleep(SLEEP)
            built.append(self)
            super().__init__(*args, **kwargs)

    work = tmp_path_factory.mktemp("pool_atlas")
    pool = work / "my_pool.txt"
    pool.write_text("# descriptions of my own\n" + "\n".join(POOL[:3]) + "\n\n" + "\n".join(POOL[3:]) + "\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "MaskScorer", SlowScorer)
        result = run_main("atlas", *demo_configs("zero_shot"), *QUICK_ATLAS, "--compare", "zero_shot",
                          "--text_pool", str(pool), "--words_blocks", "1", "--ablation_blocks", "1",
                          "--basis_size", "3", "--out", str(work / "atlas"), cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    return work / "atlas"


def test_a_users_text_pool_gives_the_heads_words(pool_atlas):
    atlas = json.loads((pool_atlas / "atlas.json").read_text())
    assert set(atlas["words"]) == {"my_pool.txt", "class prompts"}  # the user's pool replaces the shipped one
    mine = atlas["words"]["my_pool.txt"]
    assert set(mine) == {f"3,{h}" for h in range(HEADS)}  # the last block's heads
    for words in mine.values():
        texts = [t for t, _ in words]
        assert len(texts) == 3 == len(set(texts)) and set(texts) <= set(POOL), texts  # no comment, no blank line
        assert all(0 <= s <= 1 for _, s in words)
    rows = list(csv.DictReader((pool_atlas / "atlas.csv").open()))
    last = [r for r in rows if r["block"] == "3"]
    assert len(last) == HEADS and all(r["words (my_pool.txt)"].count(";") == 2 for r in last)
    assert all(r["words (my_pool.txt)"] == "" for r in rows if r["block"] != "3")
    assert "words (my_pool.txt)" in (pool_atlas / "atlas.html").read_text()


def test_the_compared_models_words_are_shown_beside(pool_atlas):
    atlas = json.loads((pool_atlas / "atlas.json").read_text())
    theirs = atlas["compare"]["words"]
    assert set(theirs) == {"my_pool.txt", "class prompts"} and set(theirs["my_pool.txt"]) == {
        f"3,{h}" for h in range(HEADS)}
    header = next(csv.reader((pool_atlas / "atlas.csv").open()))
    words = [h for h in header if "words" in h]
    assert words == ["words (my_pool.txt)", "compare words (my_pool.txt)", "words (class prompts)",
                     "compare words (class prompts)"]
    row = next(r for r in csv.DictReader((pool_atlas / "atlas.csv").open()) if r["block"] == "3")
    # the same backbone untrained on both sides: the same words
    assert row["compare words (my_pool.txt)"] == row["words (my_pool.txt)"] != ""
    page = (pool_atlas / "atlas.html").read_text()
    assert "<th>compare words (my_pool.txt)</th>" in page


def test_the_cost_times_each_phase_apart(pool_atlas):
    cost = json.loads((pool_atlas / "atlas.json").read_text())["cost"]
    seconds = cost["seconds"]
    phases = ["setup", "decomposition", "zero_ablation", "measures", "words", "compare", "page"]
    assert set(seconds) == {*phases, "total"}
    assert seconds["setup"] >= SLEEP  # the sleep (in the scorer's construction) is counted in the setup...
    assert seconds["compare"] > 0  # the compared model's measuring, its own phase
    # ... and only there: the phases do not overlap (a sleep counted twice would make their sum exceed
    # the total) and cover the command. No bound on a phase's own seconds: a loaded CI machine varies.
    assert 0 <= seconds["total"] - sum(seconds[p] for p in phases) < 1.0
    # one pass decomposes (and fills the scorer's cache); zero-ablating the last block's 4 heads
    # runs that block once per head: 4 block forwards of 4 per image = 1 pass
    assert cost["passes"] == {"decomposition": 1, "zero_ablation": 1.0} and cost["passes_over_data"] == 2.0
    assert cost["compare_passes_over_data"] == 2.0


def _tiny_config(folder, name: str, **vision) -> None:
    """An open_clip config like dg-tiny-vit with other vision settings, registered in this process."""
    import open_clip

    config = json.loads((REPO / "dg_heads/model_configs/dg-tiny-vit.json").read_text())
    config["vision_cfg"].update(vision)
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)


def test_compare_with_another_head_grid_is_one_error_line(data_root, tmp_path):
    _tiny_config(tmp_path / "configs", "dg-test-vit-3x2", layers=3, head_width=32)
    other = tmp_path / "other.yaml"
    other.write_text("model:\n  class_path: dg_heads.methods.CLIPBaseline\n  init_args:\n    mode: zero_shot\n"
                     "    clip: {model_name: dg-test-vit-3x2, pretrained: null}\n")
    result = run_main("atlas", *demo_configs("zero_shot"), *QUICK_ATLAS, "--compare", str(other),
                      "--out", str(tmp_path / "atlas"), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: --compare {other}: its image tower has 3 blocks x 2 heads, MODEL CLIPBaseline (zero_shot) has "
        f"4 blocks x 4 heads; the difference maps need the same grid (the same open_clip architecture)"]
    assert not (tmp_path / "atlas").exists()


def test_a_tower_not_pooled_by_its_class_token_is_one_error_line(data_root, tmp_path):
    _tiny_config(tmp_path / "configs", "dg-test-vit-avg", pool_type="avg")
    result = run_main("atlas", *demo_configs("zero_shot"), *QUICK_ATLAS, "--set",
                      "model.init_args.clip.model_name=dg-test-vit-avg", "--out", str(tmp_path / "atlas"),
                      cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: CLIPBaseline (zero_shot): the atlas decomposes CLS-pooled ViTs (open_clip pool_type 'tok', no "
        "attentional pooler); this tower pools with 'avg'"]
    assert not (tmp_path / "atlas").exists()


@pytest.mark.slow
def test_a_checkpoints_held_out_domain_is_mapped_only_when_asked(hap_atlas, tmp_path):
    """The HAP run held out 75: a data config that makes 75 a source domain (here test_domains [0])
    is refused for the checkpoint, and for it as `--compare`; `--held_out` maps it on purpose."""
    ckpt = hap_atlas[0] / "checkpoints/last.ckpt"
    leak = ["--set", "data.init_args.test_domains=['0']"]
    mapped = ["15", "30", "45", "60", "75"]
    expected = ("the checkpoint held out ['75'] in training, and the data config maps it as a source domain "
                f"(mapped: {mapped}); its statistics would then include the held-out domain. Set "
                "data.init_args.test_domains to hold it out, or pass --held_out to map held-out domains on purpose")
    own = run_main("atlas", str(ckpt), *leak, *QUICK_ATLAS, "--out", str(tmp_path / "own"), cwd=tmp_path)
    assert own.returncode == 2 and own.stderr.strip().splitlines() == [f"error: MODEL {ckpt}: {expected}"]
    compared = run_main("atlas", *demo_configs("zero_shot"), *leak, *QUICK_ATLAS, "--compare", str(ckpt),
                        "--out", str(tmp_path / "compared"), cwd=tmp_path)
    assert compared.returncode == 2 and compared.stderr.strip().splitlines() == [
        f"error: --compare {ckpt}: {expected}"]
    assert not (tmp_path / "own").exists() and not (tmp_path / "compared").exists()
    asked = run_main("atlas", str(ckpt), *leak, *QUICK_ATLAS, "--images_per_domain", "2", "--held_out",
                     "--ablation_blocks", "0",
                     "--words_blocks", "0", "--out", str(tmp_path / "asked"), cwd=tmp_path)
    assert asked.returncode == 0, asked.stderr[-3000:]
    meta = json.loads((tmp_path / "asked/atlas.json").read_text())["meta"]
    assert meta["domains"] == [*mapped, "0"]  # the sources, then the held-out domain
    assert "(75 held out in training by HeadPurification (last.ckpt))" in meta["split"]


def test_data_of_another_image_size_is_one_error_line(data_root, tmp_path):
    result = run_main("atlas", *demo_configs("zero_shot"), *QUICK_ATLAS, "--set", "data.init_args.image_size=64",
                      "--out", str(tmp_path / "atlas"), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: CLIPBaseline (zero_shot): data.init_args.image_size is 64 but dg-tiny-vit expects 32: pass --set "
        "data.init_args.image_size=32"]


def test_a_held_out_domain_is_sampled_across_its_classes(data_root):
    """`--held_out` maps a test domain's split, which is in table order (sorted by class): the
    atlas's sample of `--images_per_domain` images must span the classes, not be the first ones
    (a review found 30 images of RotatedDigits' `75`, all the digit 0)."""
    from dg_heads.atlas.cli import domain_sample
    from dg_heads.data.domainbed import DomainBedDataModule

    data = DomainBedDataModule("rotated_digits", ["75"], root=str(data_root), image_size=32, num_workers=0,
                               test_split="all")
    data.setup("test")
    held_out = data.test_sets["75"]
    labels = [int(data.table.labels[r]) for r in held_out.rows]
    assert len(set(labels[:30])) == 1  # the trap: the first 30 are one class
    sample = domain_sample(len(held_out), 30, seed=1)
    assert sample == sorted(set(sample)) and len(sample) == 30 and sample[-1] < len(held_out)
    assert len({labels[i] for i in sample}) >= 5
    assert domain_sample(len(held_out), 30, seed=1) == sample  # the same on every process
    assert domain_sample(20, 30, seed=1) == list(range(20))
