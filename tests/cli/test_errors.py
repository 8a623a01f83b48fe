"""A mistake found while the model or the data is built ends as one `error:` line, exit 2,
whatever layer raised it (jsonargparse wraps what a class's `__init__` raises in a long
`Does not validate against any of the Union subtypes` traceback)."""

import pytest

from dg_heads.errors import DGHeadsError, user_message
from tests.conftest import demo_configs, gpu_configs, run_cli, run_main

CASES = {
    "lora_ranks": (["--model.init_args.lora.ranks", "[2,2]"],
                   "error: model.init_args.lora: LoRA ranks [2, 2] has 2 entries; expected one per block"),
    "gating_blocks": (["--model.init_args.gating.blocks", "[7]"],
                      "error: model.init_args.gating.blocks [7]: block 7 does not exist"),
    "model_name": (["--model.init_args.clip.model_name", "ViT-Q-99"],
                   "error: model.init_args.clip: model_name 'ViT-Q-99' is not an open_clip model"),
    "pretrained_file": (["--model.init_args.clip.pretrained", "/nonexistent/weights.pt"],
                        "error: model.init_args.clip: pretrained weights file '/nonexistent/weights.pt' "
                        "does not exist"),
    "dataset": (["--data.init_args.dataset", "pacz"],
                "error: data (DomainBedDataModule): unknown dataset 'pacz'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_build_mistake_is_one_error_line_and_exit_2(case, tmp_path):
    args, expected = CASES[case]
    result = run_main("fit", *demo_configs("hap"), *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(expected), result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Union subtypes" not in result.stderr


@pytest.mark.parametrize(("cause", "expected"), [(KeyError("a bug"), None), (DGHeadsError("bad value"), "bad value")],
                         ids=["bug", "mistake"])
def test_a_bug_still_shows_its_traceback(cause, expected):
    """Only user mistakes become one line: anything else is re-raised (its traceback shows)."""
    try:
        try:
            raise cause
        except Exception as inner:
            raise ValueError("Does not validate against any of the Union subtypes") from inner
    except ValueError as wrapped:
        assert user_message(wrapped) == expected


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_every_subcommand_with_one_line(flag, tmp_path):
    """The subcommands a user can run, written out here (a new one is added to this list by hand),
    each on one line, in this order."""
    result = run_main(flag, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    names = ["fit", "validate", "test", "predict", "sweep", "collect", "prepare", "splits", "export", "atlas",
             "weights"]
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ") and line.split()]
    assert listed == names, result.stdout


# (arguments, the line's start: the key, a word it must name); jsonargparse's wording differs by version
PARSE_CASES = {
    "required": (gpu_configs("pacs", "hap"), "error: data: ", "test_domains"),
    "type": ([*demo_configs("finetune"), "--trainer.max_epochs", "abc"], "error: trainer.max_epochs: ", "abc"),
    "option": ([*demo_configs("finetune"), "--model.init_args.optim.lrr", "1"], "error: model.optim: ", "lrr"),
    "config_file": (["--config", "nope.yaml"], "error: config: ", "nope.yaml"),
}


@pytest.mark.parametrize("case", sorted(PARSE_CASES))
def test_a_config_that_does_not_parse_is_one_error_line(case, tmp_path):
    args, start, named = PARSE_CASES[case]
    result = run_main("fit", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(start) and named in lines[0], result.stderr[-3000:]


@pytest.mark.parametrize("slurm, trainer, expected", [
    ({"SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1"}, [],
     "error: SLURM started this job with --ntasks-per-node=2 (SLURM_NTASKS_PER_NODE) but trainer.devices is 1"),
    ({"SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "2"}, ["--trainer.devices", "1"],
     "error: SLURM started this job with --nodes=2 (SLURM_NNODES) but trainer.num_nodes is 1"),
])
def test_a_slurm_allocation_unlike_the_trainer_is_one_error_line_before_any_work(slurm, trainer, expected,
                                                                                tmp_path, monkeypatch):
    """Under `srun` each task is one DDP process: a layout that disagrees with trainer.devices /
    trainer.num_nodes would leave the ranks waiting for each other; it stops at start instead."""
    monkeypatch.setenv("SLURM_NTASKS", str(int(slurm["SLURM_NTASKS_PER_NODE"]) * int(slurm["SLURM_NNODES"])))
    monkeypatch.setenv("SLURM_JOB_NAME", "dgtest")
    for name, value in slurm.items():
        monkeypatch.setenv(name, value)
    result = run_main("fit", *demo_configs("finetune"), *trainer, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(expected), result.stderr[-3000:]
    assert "Traceback" not in result.stderr and not (tmp_path / "runs").exists()  # nothing built, nothing written


SUGGESTIONS = {
    "trainer": (["--trainer.max_epohcs", "3"],
                "error: unrecognized arguments: --trainer.max_epohcs 3; did you mean --trainer.max_epochs?"),
    "spec_field": (["--model.init_args.optim.lrr", "3"], "error: model.optim: Option 'lrr' is not accepted; "
                                                          "did you mean --model.init_args.optim.lr?"),
    "spec": (["--model.init_args.lroa.rank", "3"], "error: model: unrecognized arguments: --lroa.rank=3; "
                                                    "did you mean --model.init_args.lora.rank?"),
    "data": (["--data.init_args.batch_size", "3"],
             "error: data: Option 'batch_size' is not accepted; did you mean --data.init_args.eval_batch_size "
             "or --data.init_args.batch_size_per_domain?"),
}


@pytest.mark.parametrize("case", sorted(SUGGESTIONS))
def test_an_unknown_option_suggests_the_nearest_one(case, tmp_path):
    args, expected = SUGGESTIONS[case]
    result = run_main("fit", *demo_configs("hap"), *args, "--print_config", cwd=tmp_path)
    said = result.stderr.strip()
    # jsonargparse's own words before the hint vary across the supported range (the floor's 4.40)
    assert result.returncode == 2 and len(said.splitlines()) == 1 and said.startswith("error: "), said
    assert said.endswith(expected.split(";", 1)[1]), said


def test_a_yaml_syntax_error_names_the_file(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("trainer:\n  max_epochs: 3\n  devices: [1\n")
    result = run_main("fit", *demo_configs("finetune"), "--config", str(bad), "--print_config", cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"in {bad}, line 3" in result.stderr and "<unicode string>" not in result.stderr


def test_model_help_takes_the_short_class_name(tmp_path):
    # a fresh process: in one that already imported the methods, jsonargparse resolves the name itself
    result = run_cli("fit", "--model.help", "HeadPurification", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--model.gating" in result.stdout and "--model.lora" in result.stdout


@pytest.mark.slow  # builds the model and the data, up to the first training batch
def test_a_batch_larger_than_a_domain_names_the_key_to_change(data_root, tmp_path):
    result = run_main("fit", *demo_configs("finetune"), "--data.init_args.batch_size_per_domain", "5000",
                      "--data.init_args.num_workers", "0", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "fewer than batch_size_per_domain=5000" in errors[0], result.stderr[-3000:]
    assert errors[0].endswith("set data.init_args.batch_size_per_domain to 1438 or less"), errors[0]
