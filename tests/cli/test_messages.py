"""What a run prints: no expected message that looks like a failure, and tables that say which
weights and which run folder they are of."""

import os
import subprocess
import sys

import pytest

from tests.conftest import QUICK, demo_configs, run_cli

pytestmark = pytest.mark.slow


def test_runs_print_no_lightning_noise_and_name_their_checkpoint_and_export_hints_work(data_root, tmp_path):
    fit = run_cli("fit", *demo_configs("finetune"), *QUICK, "--test_after_fit", "true", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    run = "runs/rotated_digits/finetune/version_0"
    (best,) = (tmp_path / run / "checkpoints").glob("best-*.ckpt")
    said = fit.stdout + fit.stderr
    assert "💡 Tip" not in said and "multiple `ModelCheckpoint` callbacks" not in said
    assert f"test of checkpoint {run}/checkpoints/{best.name}; run folder {run}\n" in fit.stdout

    test = run_cli("test", *demo_configs("finetune"),
                   "--data.init_args.num_workers", "0", "--ckpt_path", str(best), cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    said = test.stdout + test.stderr
    assert "held out (test)" in test.stdout  # dg-heads's table ...
    # ... and not Lightning's beside it (its header and rules; the progress bar says "Testing DataLoader 0")
    assert "Test metric" not in said and "─" * 20 not in said and "━" * 20 not in said
    assert "💡 Tip" not in said and "Found keys" not in said
    assert f"test of checkpoint {best}; run folder runs/rotated_digits/finetune/version_1\n" in test.stdout

    out = tmp_path / "plain.pt"
    export = run_cli("export", str(best), "--out", str(out), cwd=tmp_path)
    assert export.returncode == 0, export.stderr[-3000:]
    assert "Found keys" not in export.stdout + export.stderr  # the frozen backbone is left out by design
    hint = export.stdout.strip().split("load it with ", 1)[1]
    # as printed, in plain open_clip (dg_heads not imported: its tiny config is not registered there)
    code = f"import sys, open_clip\nmodel = {hint}\nassert 'dg_heads' not in sys.modules\nprint('loaded')"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    plain = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert plain.returncode == 0 and "loaded" in plain.stdout, plain.stderr[-2000:]
