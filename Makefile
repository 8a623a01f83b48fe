# Quick start: `make demo` and `make test`; both install what they need into .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo demo-aat demo-retrieval lint test test-fast test-floor test-slurm bench gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -c constraints.txt torch torchvision
	$(PY) -m pip install -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# The main job: fine-tune the tiny CLIP on RotatedDigits (sources 0..60 degrees), hold out 75
# degrees, select the checkpoint by source validation accuracy, test it, print the table.
# Composed: dataset, method, then the demo preset (tiny CLIP on the CPU; last, so it wins: the
# CLI refuses it before the method file).
DEMO_CONFIGS := --config configs/data/rotated_digits.yaml --config configs/method/finetune.yaml \
                --config configs/trainer/demo.yaml

demo: install
	$(VENV)/bin/lightning fit $(DEMO_CONFIGS) --test_after_fit true

# The AAT demos (scan, GA, BP), each from the fine-tuned model above: the checkpoint `make demo`
# selected by val/acc (best-*.ckpt) in its newest finished run, made first when there is none.
# Each prints the heads it ablates, the source-validation accuracy without and with them, and
# the masked model's per-domain table. The logic is experiments/demo_aat.py (tested).
demo-aat: install
	$(PY) experiments/demo_aat.py

# Image-text retrieval on the built-in DigitCaptions (no download): zero-shot recall, then AAT
# (scan) from a fine-tuned model (fine-tuned first when there is none), each printing its recall
# table. The logic is experiments/demo_retrieval.py (tested).
demo-retrieval: install
	$(PY) experiments/demo_retrieval.py

# Lint ([tool.ruff] in pyproject.toml): seconds; CI runs it before the tests.
# `$(VENV)/bin/ruff check --fix .` fixes import order and unused imports.
lint: install
	$(VENV)/bin/ruff check .

# Two pytest workers: most tests wait on a CLI subprocess starting up, so two share 2 cores well
# (the SLURM tests run after them, in one process: one cluster at a time).
TEST_WORKERS ?= 2

test: install
	$(PY) -m pytest -q -ra --durations=15 -n $(TEST_WORKERS) --dist loadgroup -m "not slurm"
	@# The SLURM tests after, in one process: one cluster at a time (two workers' clusters share
	@# the machine's munged, and one's teardown broke the other's requeue test in a CI run).
	$(PY) -m pytest -q -ra -m slurm

test-fast: install
	$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadgroup

# The floor: a second environment (.venv-floor) with every direct dependency at the lowest
# version pyproject.toml allows (uv's lowest-direct resolution from PyPI, each direct dependency
# held at its lower bound by .ci/floor_constraints.py; the rest as new as those allow),
# as a cluster user with old pins has it. Rebuilt when pyproject.toml changes. Prints the
# resolved versions, imports the package, runs the fast tests and one short demo epoch.
FLOOR_VENV ?= .venv-floor
FLOOR_PY   := $(FLOOR_VENV)/bin/python
UV_VERSION ?= 0.13.9
FLOOR_SHOW := torch torchvision lightning open_clip_torch torchmetrics omegaconf tensorboard datasets huggingface_hub \
              jsonargparse pyarrow pyyaml tqdm scikit-learn pillow numpy pytest pytest-xdist

$(FLOOR_VENV)/.installed: pyproject.toml .ci/floor_constraints.py
	rm -rf $(FLOOR_VENV)
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_PY) -m pip install -q uv==$(UV_VERSION)
	$(PYTHON) .ci/floor_constraints.py dev > $(FLOOR_VENV)/floor-constraints.txt
	$(FLOOR_VENV)/bin/uv pip install -q --python $(FLOOR_PY) --resolution lowest-direct \
	    -c $(FLOOR_VENV)/floor-constraints.txt -e ".[dev]"
	@# Lightning < 2.5.1 installs a `lightning` command of its own (a silent no-op for `fit`); uv
	@# installs in no fixed order, so install dg-heads once more, last, as pip does: its command wins.
	$(FLOOR_VENV)/bin/uv pip install -q --python $(FLOOR_PY) --no-deps --reinstall-package dg-heads -e .
	touch $@

test-floor: $(FLOOR_VENV)/.installed
	$(FLOOR_VENV)/bin/uv pip show --python $(FLOOR_PY) $(FLOOR_SHOW) | grep -E '^(Name|Version):' | paste - - | awk '{print $$2 "==" $$4}'
	$(FLOOR_PY) -c "import dg_heads, dg_heads.data, dg_heads.methods, dg_heads.heads; print('dg_heads imports')"
	$(FLOOR_PY) -m pytest -q -ra -m "not slow" -n $(TEST_WORKERS) --dist loadgroup
	rm -rf runs/floor
	$(FLOOR_VENV)/bin/lightning fit $(DEMO_CONFIGS) --trainer.max_epochs 1 \
	    --trainer.logger.init_args.save_dir runs/floor --test_after_fit true
	test -s runs/floor/finetune/version_0/metrics_test.json  # the demo ran (not another `lightning`)

# The SLURM part alone: a real single-node cluster and a two-node one (network namespaces on a bridge;
# needs root, iproute2 and Debian's slurmctld, slurmd, slurm-client, munge; skipped with the reason
# otherwise, failed with DG_HEADS_REQUIRE_SLURM=1).
test-slurm: install
	$(PY) -m pytest -q -ra -m slurm

# Benchmarks write their tables into docs/benchmarks.md (CPU here; on a GPU machine they pick CUDA).
bench: install
	$(PY) experiments/bench_heads.py --out docs/benchmarks.md
	$(PY) experiments/bench_hap.py --out docs/benchmarks.md
	$(PY) experiments/bench_aat.py --out docs/benchmarks.md
	$(PY) experiments/bench_loader.py --out docs/benchmarks.md
	$(PY) experiments/bench_step_ops.py --out docs/benchmarks.md
	$(PY) experiments/bench_scale.py --out docs/benchmarks.md
	$(PY) experiments/bench_atlas.py --out docs/benchmarks.md

# On a machine with a CUDA GPU (never in CI): the shipped-config matrix on it (bf16-mixed, 1 GPU;
# 2-process DDP when 2 GPUs are there), the HAP / plain LoRA / full fine-tune training step on
# ViT-B/16 at 32 images x 3 domains (images/s, memory) and the ops and host syncs per step (on a GPU
# the counter also sees device-to-host copies), and the scale rehearsal on CUDA (DomainNet through the
# DataModule, the text head's build at 345 x 80 prompts, AAT's cache, HAP with activation checkpointing),
# all written into docs/benchmarks.md with the device named. Last, the seconds per training step of every
# method of the papers' sweeps and per evaluated image (ViT-B/16, bf16-mixed; experiments/bench_step_time.py)
# into experiments/measured/step_times.json, from which `dg-heads sweep` estimates accelerator-hours.
gpu-check: install
	PYTHONPATH=$(CURDIR) $(PY) .ci/gpu_matrix.py --out docs/benchmarks.md
	$(PY) experiments/bench_hap.py --model ViT-B-16 --per-domain 32 --device cuda --precision bf16-mixed --out docs/benchmarks.md
	$(PY) experiments/bench_step_ops.py --model ViT-B-16 --per-domain 4 --device cuda --out docs/benchmarks.md
	$(PY) experiments/bench_scale.py --device cuda --hap-per-domain 32 8 --out docs/benchmarks.md
	$(PY) experiments/bench_step_time.py --device cuda --precision bf16-mixed --out experiments/measured/step_times.json

clean:
	rm -rf runs lightning_logs .pytest_cache
