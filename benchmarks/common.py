"""Shared parts of the benchmark scripts: environment record, timing, memory, tables, JSON.

Every benchmark prints a table and writes ``benchmarks/results/<name>.json`` holding the
environment (device, torch version, threads), the settings and one record per measurement.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import d4c  # noqa: E402,F401  (silences clip's pkg_resources notice)
from d4c.environment import environment  # noqa: E402,F401  (the one environment record; re-exported)
from d4c.io import write_json  # noqa: E402

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"

# Models timed on every machine, and the full-size shapes timed on a GPU (--full).
CPU_MODELS = ("tiny-vit", "tiny-rn", "random:small-vit", "random:small-rn")
GPU_MODELS = ("random:RN50", "random:ViT-B/32", "random:ViT-B/16")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeat: int = 1, warmup: int = 0) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """Peak resident memory of this process (MB) and, on CUDA, ``max_memory_allocated``."""
    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        out["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def run_isolated(fn: Callable[..., dict], *args: Any) -> dict:
    """Run ``fn(*args)`` in a fresh spawned process, so its peak memory is its own."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def format_table(rows: Iterable[dict[str, Any]], columns: list[str]) -> str:
    """A markdown table of ``rows`` restricted to ``columns``."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_results(name: str, device: torch.device, settings: dict[str, Any], records: list[dict[str, Any]],
                  out_dir: Path = RESULTS_DIR) -> Path:
    """Write ``<out_dir>/<name>.json`` atomically and return its path."""
    path = out_dir / f"{name}.json"
    write_json(path, {"benchmark": name, "environment": environment(device), "settings": settings,
                      "records": records})
    return path
