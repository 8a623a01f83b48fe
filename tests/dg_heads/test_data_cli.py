"""`dg-heads prepare` and `dg-heads splits` (`dg_heads/data_cli.py`): typed functions that
jsonargparse's CLI runs; the argparse spellings the README and scripts use still work, a bad
`--hf` / `--source` mapping is one `error:` line naming its key, `--help` lists every option with
its help. What the tools report about a dataset is tested with the data (tests/dg_heads/data)."""

import json
import os
import subprocess
import sys

import pytest

from dg_heads.data.splits import holdout_split
from tests.conftest import REPO, make_domainbed, run_main

CAMS = {"cam_a": ["cat", "dog"], "cam_b": ["cat", "dog"]}


def test_splits_takes_the_dashed_flags_and_jsonargparses_names_alike(tmp_path):
    folder = make_domainbed(tmp_path, "my_cams", CAMS, per_class=5, size=8)
    dashed = run_main("splits", "--root", str(tmp_path), "--dataset", "my_cams", "--trial-seed", "2",
                      "--holdout-fraction", "0.3", cwd=tmp_path)
    underscored = run_main("splits", f"--root={tmp_path}", "--dataset=my_cams", "--trial_seed", "2",
                           "--holdout_fraction=0.3", cwd=tmp_path)
    assert dashed.returncode == underscored.returncode == 0, dashed.stderr + underscored.stderr
    printed = json.loads(dashed.stdout)
    assert json.loads(underscored.stdout) == printed
    assert (printed["dataset"], printed["trial_seed"], printed["holdout_fraction"]) == ("my_cams", 2, 0.3)
    for env_index, domain in enumerate(CAMS):  # DomainBed's formula (tested in test_splits) on the disk's order
        files = [f"{domain}/{c}/{f}" for c in sorted(os.listdir(folder / domain))
                 for f in sorted(os.listdir(folder / domain / c))]
        in_idx, out_idx = holdout_split(len(files), 2, env_index, 0.3)
        assert printed["domains"][domain] == {"in": [files[i] for i in in_idx], "out": [files[i] for i in out_idx]}


def test_prepare_takes_a_bare_json_flag_and_a_repeated_split(tmp_path):
    make_domainbed(tmp_path, "my_cams", CAMS, per_class=2, size=8)
    bare = run_main("prepare", "--json", "my_cams", "--root", str(tmp_path), cwd=tmp_path)  # argparse's store_true
    valued = run_main("prepare", "my_cams", "--root", str(tmp_path), "--json", "true", cwd=tmp_path)
    assert bare.returncode == valued.returncode == 0, bare.stderr + valued.stderr
    assert json.loads(bare.stdout) == json.loads(valued.stdout)
    assert json.loads(bare.stdout)["counts"] == {"cam_a": {"cat": 2, "dog": 2}, "cam_b": {"cat": 2, "dog": 2}}
    # argparse's `append`: one item a flag (digit_captions is built in: nothing downloads)
    captions = run_main("prepare", "digit_captions", "--split", "test", "--split", "val", "--json", cwd=tmp_path)
    assert captions.returncode == 0, captions.stderr
    assert list(json.loads(captions.stdout)["splits"]) == ["test", "val"]


FIELDS_HF = "['name', 'path', 'data_files', 'config', 'revision', 'splits', 'image_column', 'label_column', "
BAD_MAPPINGS = {
    "unknown_key": ("splits", "--hf", "{nme: owner/pacs}", "error: --hf: unknown key 'nme'; expected some of "
                    + FIELDS_HF),
    "unknown_source_key": ("prepare", "--source", "{name: x, captions: y}",
                           "error: --source: unknown key 'captions'; expected some of ['name', 'path', "),
    "key_type": ("splits", "--hf", "{name: x, splits: test}",
                 "error: --hf: key 'splits': expected list[str] | None; got 'test'"),
    "not_a_mapping": ("prepare", "--source", "nope.yaml", "error: --source: expected a mapping of some of ['name', "),
}


@pytest.mark.parametrize("case", sorted(BAD_MAPPINGS))
def test_a_bad_source_mapping_is_one_error_line_naming_the_key(case, tmp_path):
    tool, option, value, expected = BAD_MAPPINGS[case]
    dataset = ["--dataset", "pacs"] if tool == "splits" else ["my_captions"]
    result = run_main(tool, *dataset, option, value, cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == "", result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(expected), result.stderr


@pytest.mark.parametrize("tool, expected", [
    ("splits", ["--dataset DATASET", "one of ['domain_net', ", "--root ROOT", "data root (default $DG_HEADS_DATA)",
                "--trial_seed", "DomainBed's trial seed", "--holdout_fraction", "--hf HF", "HFSource's fields",
                "Also accepted: dashes in option names (--trial-seed, --holdout-fraction)."]),
    ("prepare", ["dataset", "--root ROOT", "--hf HF", "--json {true,false}", "print the report, with per-class",
                 "--source SOURCE", "CaptionSource's fields", "--split SPLIT", "a split to fetch and check",
                 "--cache_dir", "the datasets cache", "--cache-dir", "--split a --split b"]),
])
def test_help_lists_every_option_with_its_help(tool, expected, tmp_path):
    result = run_main(tool, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # help is wrapped to the terminal's width
    missing = [words for words in expected if words not in text]
    assert not missing, result.stdout


def test_help_and_a_bad_option_start_without_lightning(tmp_path):
    """Lightning (seconds of imports) only where a dataset is read, not to print the help or an error."""
    runs = [["splits", "--help"], ["prepare", "--help"], ["splits", "--dataset", "x", "--hf", "{a: 1}"]]
    code = (f"import sys\nfrom dg_heads.cli import main\nfor argv in {runs}:\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "assert 'lightning' not in sys.modules, 'Lightning was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "error: --hf: unknown key 'a'" in result.stderr


def test_a_caption_folder_given_without_source_is_named_as_caption_data(tmp_path):
    """`prepare ./captions` (an imagefolder with metadata.jsonl) read as a DG folder: besides its DG
    problems, the first line says it looks like caption data and how to check it as such."""
    from PIL import Image

    (tmp_path / "captions" / "test").mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (8, 8)).save(tmp_path / "captions" / "test" / f"{i}.png")
    rows = [json.dumps({"file_name": f"{i}.png", "captions": ["a digit", "a number"]}) for i in range(2)]
    (tmp_path / "captions" / "test" / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    result = run_main("prepare", str(tmp_path / "captions"), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    problems = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("problem:")]
    assert problems[0] == (f"problem: {tmp_path / 'captions'} holds test/metadata.jsonl: image-caption (retrieval) "
                           f"data? Check it with `dg-heads prepare {tmp_path / 'captions'} --source "
                           f"'{{name: {tmp_path / 'captions'}}}'`"), result.stdout
    make_domainbed(tmp_path, "two_domains", {"a": ["x", "y"], "b": ["x"]})  # a DG folder with a problem: no word
    result = run_main("prepare", str(tmp_path / "two_domains"), cwd=tmp_path)
    assert result.returncode == 1 and "problem:" in result.stdout and "--source" not in result.stdout


def test_a_holdout_fraction_outside_zero_one_is_one_error_line(tmp_path):
    """As the DataModule refuses it: 2 would put every image in `out` (exit 0 before)."""
    for value in ("2", "0"):
        result = run_main("splits", "--dataset", "rotated_digits", "--holdout-fraction", value, cwd=tmp_path)
        assert result.returncode == 2 and result.stdout == "", result.stdout[:200]
        assert result.stderr.strip() == f"error: --holdout_fraction must be in (0, 1), got {float(value)}"
