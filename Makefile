# Quick start: `make demo` and `make test`; both install what they need into .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast test-slurm bench gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -c constraints.txt torch torchvision
	$(PY) -m pip install -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# The main job: fine-tune the tiny CLIP on RotatedDigits (sources 0..60 degrees), hold out 75
# degrees, select the checkpoint by source validation accuracy, test it, print the table.
demo: install
	$(VENV)/bin/lightning fit --config configs/demo/finetune.yaml --test_after_fit true

# Two pytest workers: most tests wait on a CLI subprocess starting up, so two share 2 cores well
# (the SLURM tests stay together on one worker: one cluster).
TEST_WORKERS ?= 2

test: install
	$(PY) -m pytest -q -ra -n $(TEST_WORKERS) --dist loadgroup

test-fast: install
	$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadgroup

# The SLURM part alone: a real single-node cluster (needs root and Debian's slurmctld, slurmd,
# slurm-client, munge; skipped with the reason otherwise, failed with DG_HEADS_REQUIRE_SLURM=1).
test-slurm: install
	$(PY) -m pytest -q -ra -m slurm

# Benchmarks write their tables into docs/benchmarks.md (CPU here; on a GPU machine they pick CUDA).
bench: install
	$(PY) experiments/bench_heads.py --out docs/benchmarks.md
	$(PY) experiments/bench_hap.py --out docs/benchmarks.md
	$(PY) experiments/bench_aat.py --out docs/benchmarks.md
	$(PY) experiments/bench_loader.py --out docs/benchmarks.md
	$(PY) experiments/bench_step_ops.py --out docs/benchmarks.md

# On a machine with a CUDA GPU (never in CI): the shipped-config matrix on it (bf16-mixed, 1 GPU;
# 2-process DDP when 2 GPUs are there) and the HAP / plain LoRA / full fine-tune training step on
# ViT-B/16 at 32 images x 3 domains, both written into docs/benchmarks.md with the device named.
gpu-check: install
	$(PY) experiments/gpu_matrix.py --out docs/benchmarks.md
	$(PY) experiments/bench_hap.py --model ViT-B-16 --per-domain 32 --device cuda --precision bf16-mixed --out docs/benchmarks.md

clean:
	rm -rf runs lightning_logs .pytest_cache
