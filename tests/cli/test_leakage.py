"""Testing on a domain the checkpoint trained on (the classic DG mistake) is said in one line."""

import pytest

from tests.conftest import QUICK, demo_configs, run_cli

pytestmark = pytest.mark.slow


def test_testing_on_a_training_domain_warns_and_strict_refuses(data_root, tmp_path):
    fit = run_cli("fit", *demo_configs("finetune"), *QUICK, "--trainer.limit_train_batches", "1", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    (ckpt,) = (tmp_path / "runs/rotated_digits/finetune/version_0/checkpoints").glob("best-*.ckpt")
    test = ["test", *demo_configs("finetune"),
            "--trainer.limit_test_batches", "1", "--data.init_args.num_workers", "0", "--ckpt_path", str(ckpt)]
    leaked = run_cli(*test, "--data.init_args.test_domains", "['0']", cwd=tmp_path)
    assert leaked.returncode == 0, leaked.stderr[-3000:]
    warnings = [line for line in leaked.stderr.splitlines() if "trained on" in line]
    assert warnings == [f"warning: data.init_args.test_domains ['0']: the checkpoint {ckpt} trained on this "
                        "domain (its source domains: ['0', '15', '30', '45', '60']); its accuracy there is not "
                        "domain generalisation (--strict true makes this an error)"], leaked.stderr[-3000:]
    strict = run_cli(*test, "--data.init_args.test_domains", "['0']", "--strict", "true", cwd=tmp_path)
    assert strict.returncode == 2 and strict.stderr.strip().splitlines()[-1].startswith(
        "error: data.init_args.test_domains ['0']: the checkpoint"), strict.stderr[-3000:]
    held_out = run_cli(*test, "--strict", "true", cwd=tmp_path)  # its own held-out domain, 75: no word
    assert held_out.returncode == 0 and "trained on" not in held_out.stderr, held_out.stderr[-3000:]
