"""experiments/bench_hap.py (what `make gpu-check` runs on a GPU) runs end to end, and its exact
memory column counts what a step holds: the tiny backbone on the CPU under bf16-mixed."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_hap_writes_its_section_with_every_method(tmp_path):
    out = tmp_path / "benchmarks.md"
    subprocess.run([sys.executable, str(ROOT / "experiments/bench_hap.py"), "--model", "dg-tiny-vit",
                    "--per-domain", "2", "--repeats", "1", "--device", "cpu", "--precision", "bf16-mixed",
                    "--out", str(out)], check=True, capture_output=True, text=True, timeout=600,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})  # this checkout's dg_heads
    text = out.read_text()
    assert "<!-- bench_hap_cpu_bf16-mixed -->" in text
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| method")}
    assert set(rows) == {"hap", "hap_gates_local", "plain_lora", "finetune"}
    held = {method: float(cells[-1]) for method, cells in rows.items()}
    per_second = {method: float(cells[1]) for method, cells in rows.items()}
    milliseconds = {method: float(cells[0]) for method, cells in rows.items()}
    for method in rows:  # images/s is the batch (3 domains x 2 images) over the step time
        assert per_second[method] == pytest.approx(6 / (milliseconds[method] / 1000), rel=0.01)
    verdicts = [line for line in text.splitlines() if line.startswith("- `hap")]
    assert [v.split("`")[1] for v in verdicts] == ["hap", "hap_gates_local"]
    assert all("full fine-tune's" in v and "(GPU goal >= 0.85x)" in v for v in verdicts)
    # full fine-tuning's gradients and AdamW moments: 3 x 4 bytes per backbone weight, which the
    # tiny tower alone makes several MiB; the LoRA methods' trainable tensors are a few KiB
    assert held["finetune"] > held["hap"] > held["plain_lora"] > 0  # HA-LoRA's per-head factors: more than plain
    assert held["hap"] == held["hap_gates_local"]  # the routing changes the backward, not what is saved
