"""experiments/bench_scale.py (`make bench`, `make gpu-check`): the scale rehearsal runs at tiny sizes
and writes every row; its AAT cache formula is the real scorer's cache."""

import os
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _value(text: str, quantity: str) -> str:
    """The value cell of the two-column row whose quantity starts with `quantity`."""
    rows = [line.split("|")[2].strip() for line in text.splitlines() if line.startswith(f"| {quantity}")]
    assert len(rows) == 1, (quantity, rows)
    return rows[0]


@pytest.mark.slow
def test_bench_scale_quick_writes_every_row(tmp_path):
    out = tmp_path / "benchmarks.md"
    done = subprocess.run([sys.executable, str(ROOT / "experiments/bench_scale.py"), "--quick", "--device", "cpu",
                           "--out", str(out)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # this checkout's dg_heads
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert "<!-- bench_scale_cpu -->" in text and "Measured on: CPU only" in text

    # DomainNet x 0.01, each domain at least 2 images a class: 690 + 690 + 723 + 1,725 + 1,729 + 691
    assert _value(text, "entries / domains / classes") == "6,248 / 6 / 345"
    assert float(_value(text, "`prepare_data` + `setup").split()[0]) > 0
    declared = int(_value(text, "worker processes per rank (train + val), declared"))
    assert declared == 2  # num_workers 1: one for training, one for the evaluation loader being read
    started = int(_value(text, "worker processes per rank, started and counted"))
    assert declared == started > 0  # the processes really started are those the loaders declare
    assert int(_value(text, "worker processes on an 8-GPU node")) == 8 * declared
    assert int(_value(text, "training samplers (").split()[0].replace(",", "")) > 0

    text_row = [line for line in text.splitlines() if line.startswith("| dg-tiny-vit (random init)")]
    assert len(text_row) == 1 and "| 345 x 80 | 27,600 | cpu |" in text_row[0]

    # bf16: (layers + 1) x tokens x width x 2 bytes: ViT-B/16 13 x 197 x 768 x 2, ViT-L/14 25 x 257 x 1024 x 2
    assert "Per image (bf16-mixed): ViT-B/16 3.93 MB, ViT-L/14 13.16 MB." in text
    aat = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in text.splitlines()
           if line.startswith("| `configs/method/aat_")}
    assert set(aat) == {f"`configs/method/aat_{s}.yaml`" for s in ("bp", "ga", "scan")}
    for cells in aat.values():
        images = int(cells[2].strip().replace(",", ""))
        assert float(cells[3].split()[0]) == pytest.approx(images * 3_933_696 / 2**30, abs=0.051)
        assert float(cells[5].split()[0]) == pytest.approx(images * 13_158_400 / 2**30, abs=0.051)
        # within the config's 4 GiB budget: as many block inputs (one: images x tokens x width x 2) as fit
        for kept, (blocks, tokens, width) in ((cells[4], (12, 197, 768)), (cells[6], (24, 257, 1024))):
            levels = min(blocks + 1, int(4 * 2**30 // (images * tokens * width * 2)))
            assert f"({levels}/{blocks + 1} levels) of 4 GiB" in kept, kept

    hap = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| dg-tiny-vit | 3 domains")]
    assert len(hap) == 1
    without, with_ = float(hap[0][2]), float(hap[0][3])
    # checkpointing keeps at least every block's input: 4 blocks x 6 images x 65 tokens x 64 wide x 4 bytes
    assert 4 * 6 * 65 * 64 * 4 / 2**20 <= with_ < without


def test_aat_cache_bytes_is_what_the_scorer_caches():
    """`aat_cache_bytes` (the scorer's `cache_bytes`, with no model built) against a real `MaskScorer`'s cache,
    fp32 and under bf16 autocast, on the tiny CLIP."""
    import dg_heads.backbone  # noqa: F401  (registers dg-tiny-vit)
    from dg_heads import heads
    from dg_heads.methods.aat import MaskScorer
    from experiments.bench_scale import aat_cache_bytes

    model = heads.convert(open_clip.create_model("dg-tiny-vit").eval())
    images = torch.randn(3, 3, 32, 32)
    for precision, autocast in (("32-true", None), ("bf16-mixed", torch.bfloat16)):
        scorer = MaskScorer(model, lambda f: f, num_domains=1,
                            autocast=lambda dtype=autocast: torch.autocast("cpu", dtype, enabled=dtype is not None))
        scorer.add(images, torch.zeros(3, dtype=torch.long), 0)
        cached = sum(t.untyped_storage().nbytes() for b in scorer.batches for t in b.block_inputs.values())
        assert aat_cache_bytes("dg-tiny-vit", 3, precision) == cached
