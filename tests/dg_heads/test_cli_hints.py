"""`dg_heads.cli_hints`, in process: short class names for `--model.help`, the file of a YAML
syntax error, and the nearest option to an unknown one, on a small real jsonargparse parser with a
subcommand (the CLI's own messages, as a user meets them: tests/cli/test_errors.py)."""

from jsonargparse import ArgumentParser

from dg_heads.cli_hints import expand_help, name_yaml_file, suggest


def test_help_takes_a_short_class_name_in_any_case():
    assert expand_help(["fit", "--model.help", "headpurification"]) == \
        ["fit", "--model.help", "dg_heads.methods.HeadPurification"]
    assert expand_help(["--data.help", "DomainBedDataModule"]) == ["--data.help", "dg_heads.data.DomainBedDataModule"]
    assert expand_help(["--model.help", "my.module.Mine"]) == ["--model.help", "my.module.Mine"]  # a path: as given
    assert expand_help(["--model.help", "Nothing"]) == ["--model.help", "Nothing"]  # unknown: jsonargparse says so


def test_a_yaml_syntax_error_names_the_file_that_does_not_load(tmp_path):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("trainer:\n  max_epochs: 3\n")
    bad.write_text("trainer:\n  devices: [1\n")
    message = 'Problem in "<unicode string>", line 3, column 1'
    assert name_yaml_file(message, ["--config", str(good), f"--config={bad}"]) == \
        f"Problem in {bad}, line 3, column 1"
    assert name_yaml_file("trainer.max_epochs: expected an int", ["--config", str(bad)]) == \
        "trainer.max_epochs: expected an int"


def _parser() -> ArgumentParser:
    """`--seed_everything` at the top, `--trainer.max_epochs` and `--ckpt_path` in subcommand `fit`."""
    fit = ArgumentParser(exit_on_error=False)
    fit.add_argument("--trainer.max_epochs", type=int)
    fit.add_argument("--ckpt_path", type=str)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--seed_everything", type=int)
    parser.add_subcommands().add_subcommand("fit", fit)
    return parser


def test_an_unknown_option_gets_the_nearest_known_one_also_from_a_subcommand():
    parser = _parser()
    said = "unrecognized arguments: --trainer.max_epohcs 3"
    assert suggest(said, parser) == said + "; did you mean --trainer.max_epochs?"
    said = "unrecognized arguments: --seed_everythin 3"
    assert suggest(said, parser) == said + "; did you mean --seed_everything?"
    said = "unrecognized arguments: --zzz 3"
    assert suggest(said, parser) == said  # nothing near: no hint


def test_an_unknown_field_of_a_model_spec_gets_its_full_key():
    """A section chosen by class_path (`model`): the fields of the classes it may name."""
    said = "model.optim: Option 'lrr' is not accepted"
    assert suggest(said, _parser()) == said + "; did you mean --model.init_args.optim.lr?"


def test_a_hint_never_hides_the_error():
    assert suggest("unrecognized arguments: --x 1", parser=object()) == "unrecognized arguments: --x 1"
    assert suggest("trainer.max_epochs: Expected a <class 'int'>", _parser()) == \
        "trainer.max_epochs: Expected a <class 'int'>"
