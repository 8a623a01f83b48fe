"""Shared pieces of the benchmark scripts: interleaved timing, machine description, and
writing one named section of docs/benchmarks.md without touching the others."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch


def machine() -> str:
    """What the figures were measured on, in one line."""
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    else:
        cpu = platform.processor() or "cpu"
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        device = f"CPU only: {cpu}, {torch.get_num_threads()} threads"
    return f"{device}; torch {torch.__version__}; Python {platform.python_version()}"


def interleaved(cases: dict[str, Callable[[], None]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each case, the cases taking turns so drift hits all alike."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def section(title: str, command: str, method: str, lines: list[str]) -> str:
    """A benchmark section: title, machine, the command that repeats it, how it was measured, body."""
    return "\n".join([f"## {title}", "", f"Measured on: {machine()}.", f"Command: `{command}`; {method}", "", *lines])


def update_section(path: Path, name: str, body: str) -> None:
    """Replace (or append) the section between `<!-- name -->` markers of a Markdown file."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    new_file = "# Benchmarks\n\nEvery figure comes from the command named beside it.\n"
    text = path.read_text() if path.exists() else new_file
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
