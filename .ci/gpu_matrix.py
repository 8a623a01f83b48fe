"""The shipped-config matrix on a CUDA GPU, recorded in docs/benchmarks.md.

    PYTHONPATH=. python .ci/gpu_matrix.py --out docs/benchmarks.md      (or `make gpu-check`)

from the repository root (it imports `experiments.bench_report`, the benchmarks' report writer).

Runs `tests/configs/test_shipped_configs.py` (every shipped composition of configs/: the GPU preset x
every dataset x every method, the HAP variants, the demos; tiny backbone, fake data, bf16-mixed;
every method also as 2-process DDP over NCCL when the machine has 2 GPUs) and the setup
device test with `DG_HEADS_TEST_ACCELERATOR=gpu`, then writes what ran, on which device, and
what passed. CI never runs this: it needs a GPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import torch

from experiments.bench_report import section, update_section

REPO = Path(__file__).resolve().parents[1]

TESTS = ["tests/configs/test_shipped_configs.py", "tests/dg_heads/methods/test_setup_device.py"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("error: no CUDA GPU here: the GPU matrix needs one (the CPU matrix is part of `make test`)",
              file=sys.stderr)
        sys.exit(2)
    report = REPO / "runs" / "gpu_matrix.xml"
    report.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pytest", "-q", "-rs", *TESTS, f"--junitxml={report}"]
    env = {**os.environ, "DG_HEADS_TEST_ACCELERATOR": "gpu"}
    code = subprocess.run(command, cwd=REPO, env=env).returncode
    outcomes, rows = Counter(), []
    for case in ET.parse(report).getroot().iter("testcase"):
        outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        outcomes[outcome] += 1
        rows.append(f"| `{case.get('name')}` | {outcome} | {float(case.get('time', 0)):.1f} |")
    body = section(
        f"Shipped configs on the GPU ({torch.cuda.device_count()} GPU(s))",
        "make gpu-check (PYTHONPATH=. python .ci/gpu_matrix.py --out docs/benchmarks.md)",
        "every shipped composition of configs/ with the tiny backbone on fake data, bf16-mixed on CUDA; "
        "every method also as 2-process DDP (NCCL) when 2 GPUs are present, skipped otherwise.",
        [", ".join(f"{n} {k}" for k, n in sorted(outcomes.items())), "", "| test | outcome | seconds |",
         "|---|---|---|", *rows],
    )
    print(body)
    if args.out:
        update_section(args.out, "gpu_matrix", body)
    sys.exit(code)


if __name__ == "__main__":
    main()
