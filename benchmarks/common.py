"""Shared parts of the benchmark scripts: environment record, timing, memory, tables, JSON.

Every benchmark prints a table and writes ``benchmarks/results/<name>.json`` holding the
environment (device, torch version, threads, load average), the settings and one record per measurement.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
BENCH_CODE_ENV = "D4C_BENCH_CODE"
"""A folder holding another revision's ``d4c/``: a paired before/after row imports that one (see run_row)."""
if os.environ.get(BENCH_CODE_ENV):
    sys.path.insert(0, os.environ[BENCH_CODE_ENV])

import d4c  # noqa: E402,F401  (silences clip's pkg_resources notice)
try:
    from d4c.environment import environment  # noqa: E402,F401  (the one environment record; re-exported)
except ImportError:  # a paired row running an earlier revision's d4c: rows record no environment
    environment = None
from d4c.io import write_json  # noqa: E402
try:
    from d4c.runtime import tune_cpu_allocator  # noqa: E402
except ImportError:  # a paired row running an earlier revision's d4c, which had no allocator setting
    def tune_cpu_allocator() -> bool:
        return False

ALLOCATOR_TUNED = tune_cpu_allocator()  # as the command line does (D4C_MALLOC_TUNING=0 measures without)
RESULTS_DIR = Path(os.environ.get("D4C_BENCH_RESULTS") or REPO_ROOT / "benchmarks" / "results")
"""Where results go: ``benchmarks/results``, or ``$D4C_BENCH_RESULTS`` (``benchmarks/gpu_check.sh``)."""

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
                  out_dir: Path | None = None) -> Path:
    """Write ``<out_dir>/<name>.json`` (default :data:`RESULTS_DIR`) atomically and return its path."""
    path = (out_dir or RESULTS_DIR) / f"{name}.json"
    write_json(path, {"benchmark": name, "environment": {**environment(device), "allocator_tuned": ALLOCATOR_TUNED},
                      "settings": settings, "records": records})
    return path


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (the machine is shared: every timing records them)."""
    return [round(v, 2) for v in os.getloadavg()]


def export_revision(rev: str) -> tuple[Path, str]:
    """The tree of git revision ``rev`` (e.g. ``main``) exported to a temporary folder; ``(folder, commit)``."""
    sha = subprocess.run(["git", "rev-parse", rev], cwd=REPO_ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    dest = Path(tempfile.gettempdir()) / "d4c-bench-code" / sha[:12]
    if not (dest / "d4c").is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}.", dir=dest.parent))
        archive = subprocess.run(["git", "archive", sha], cwd=REPO_ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(staging)], input=archive, check=True)
        os.replace(staging, dest)
    return dest, sha


def run_row(script: Path, row: dict[str, Any], code: Path | None = None, timeout: float | None = None) -> dict:
    """Run ``script --_row JSON`` in a fresh process (its own peak memory) and return the JSON it prints last.

    With ``code``, that process imports ``d4c`` from ``code`` (another revision, for paired before/after rows).
    """
    env = dict(os.environ)
    env.pop(BENCH_CODE_ENV, None)
    if code is not None:
        env[BENCH_CODE_ENV] = str(code)
    done = subprocess.run([sys.executable, str(script), "--_row", json.dumps(row)], env=env, capture_output=True,
                          text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{script.name} row {row} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
def matmul_gflops(device: torch.device, size: int = 2048, repeat: int = 7) -> float:
    """This machine's float32 matrix-product throughput (GFLOP/s): the median of ``size``^3 products.

    It is the yardstick of the "fraction of the machine" figures: a step whose matrix products and
    convolutions (counted by :func:`step_flops`) run at this rate takes ``flops / (rate * 1e9)`` s.
    """
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    seconds = timed(lambda: a @ b, device, repeat=repeat, warmup=2)
    return round(2 * size**3 / seconds / 1e9, 1)


def step_flops(fn: Callable[[], Any]) -> int:
    """Floating-point operations of the matrix products and convolutions ``fn()`` runs, forward and backward
    (``torch.utils.flop_counter``: 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())
