#!/usr/bin/env python
"""The prepared GPU check (``benchmarks/gpu_check.sh OUTDIR``): one command for a machine with one CUDA GPU.

Parts, each a subprocess with its own time limit (a part that fails or runs out of time is recorded
and the next one runs), all writing into OUTDIR:

1. ``tests``: the CUDA-only tests (``pytest -m cuda``);
2. ``benchmarks``: ``benchmarks/run.py --full`` figures for random-weight RN50, ViT-B/32, ViT-B/16:
   generation seconds per iteration per method and schedule, reconstruction seconds per step per
   unit kind (eager, and compiled for ViT-B/32), calibration seconds, evaluation images/s, peak
   ``torch.cuda.max_memory_allocated`` (``OUTDIR/results/*.json``);
3. ``whole_run``: ViT-B/32's whole D4C run with cut iterations, extrapolated to the paper's
   (128 images x 3000 iterations; 20,000 steps per unit), against the targets: generation
   <= 150 s (reference schedule; <= 60 s batched, from the generation benchmark's batched row),
   reconstruction <= 30 min;
4. ``precision``: TF32 and bf16 (autocast) against float32: step speed on the GPU and the zoo's
   top-1 after a short W4A8 D4C run (``benchmarks/bench_precision.py``).

``OUTDIR/gpu_check.json`` holds every part's status, seconds and figures, and the verdicts against
the targets; ``OUTDIR/gpu_check.log`` everything the parts printed. With ``--cpu`` every part runs
on the CPU at tiny sizes (zoo models, a few iterations) so that the script itself is tested in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from d4c.io import write_json  # noqa: E402

GPU_BUDGET_S = 8 * 60


def _parts(cpu: bool, out: Path) -> list[tuple[str, list[str], int]]:
    """(name, command, time limit in seconds) of every part."""
    py = sys.executable
    results = out / "results"
    if cpu:
        return [
            ("tests", [py, "-m", "pytest", "-q", "-m", "cuda", "-rs", "tests"], 120),
            ("benchmarks", [py, str(HERE / "run.py"), "--cpu_smoke"], 300),
            ("whole_run", [py, str(HERE / "bench_whole_run.py"), "--models", "tiny-vit", "--gen_iter", "1",
                           "--recon_iters", "1", "--device", "cpu", "--output", str(results / "whole_run.json")], 300),
            ("precision", [py, str(HERE / "bench_precision.py"), "--cpu", "--output",
                           str(results / "precision.json")], 300),
        ]
    return [
        ("tests", [py, "-m", "pytest", "-q", "-m", "cuda", "-rs", "tests"], 60),
        ("benchmarks", [py, str(HERE / "run.py"), "--full", "--gpu_check"], 220),
        ("whole_run", [py, str(HERE / "bench_whole_run.py"), "--models", "random:ViT-B/32", "--gen_iter", "2",
                       "--recon_iters", "10", "--compile", "off", "--device", "cuda",
                       "--output", str(results / "whole_run.json")], 110),
        ("precision", [py, str(HERE / "bench_precision.py"), "--device", "cuda", "--output",
                       str(results / "precision.json")], 70),
    ]


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def verdicts(results: Path) -> list[dict]:
    """The GPU targets against what the parts measured (extrapolated to the paper's counts)."""
    rows = []
    whole = _load(results / "whole_run.json")
    for record in (whole or {}).get("records", []):
        for stage, target in record.get("targets_s", {}).items():
            measured = record["paper_s"][stage]
            rows.append({"target": f"{record['model']} {stage}, {record['schedule']} schedule, paper's counts",
                         "measured_s": measured, "target_s": target, "met": measured <= target})
    generation = _load(results / "generation.json")
    for row in (generation or {}).get("rows", []):
        if row["model"] == "random:ViT-B/32" and row["method"] == "d4c3" and row["schedule"] == "batched" \
                and row.get("seconds_per_iteration") and generation["environment"].get("type") == "cuda":
            measured = row["seconds_per_iteration"] * 3000
            rows.append({"target": "random:ViT-B/32 D4C generation, batched schedule, 128 images x 3000 iterations "
                                   "(benchmark's s/iteration x 3000)", "measured_s": round(measured, 1),
                         "target_s": 60.0, "met": measured <= 60.0})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", help="folder for gpu_check.json, gpu_check.log and results/")
    parser.add_argument("--cpu", action="store_true", help="run every part on the CPU at tiny sizes (CI)")
    args = parser.parse_args(argv)
    out = Path(args.outdir).resolve()
    (out / "results").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "D4C_OFFLINE": "1", "D4C_BENCH_RESULTS": str(out / "results"), "PYTHONUNBUFFERED": "1"}
    if args.cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    began = time.perf_counter()
    parts = []
    with open(out / "gpu_check.log", "w") as log:
        for name, command, limit in _parts(args.cpu, out):
            log.write(f"\n===== {name}: {' '.join(command)} (limit {limit} s)\n")
            log.flush()
            start = time.perf_counter()
            try:
                status = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        timeout=limit).returncode
            except subprocess.TimeoutExpired:
                status = "timeout"
            seconds = round(time.perf_counter() - start, 1)
            log.write(f"===== {name}: {'ok' if status == 0 else status} in {seconds} s\n")
            parts.append({"part": name, "status": "ok" if status == 0 else str(status), "seconds": seconds,
                          "command": command})
    results = out / "results"
    import torch

    record = {"benchmark": "gpu_check", "mode": "cpu" if args.cpu else "cuda",
              "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.cpu else "cpu",
              "seconds": round(time.perf_counter() - began, 1), "budget_s": None if args.cpu else GPU_BUDGET_S,
              "parts": parts, "targets": verdicts(results),
              "results": {p.stem: _load(p) for p in sorted(results.glob("*.json"))}}
    write_json(out / "gpu_check.json", record)
    failed = [p["part"] for p in parts if p["status"] != "ok"]
    print(f"gpu_check: {len(parts) - len(failed)}/{len(parts)} parts ok in {record['seconds']} s"
          f"{' (failed: ' + ', '.join(failed) + ')' if failed else ''}; {out / 'gpu_check.json'}, "
          f"{out / 'gpu_check.log'}")
    for row in record["targets"]:
        print(f"  {row['target']}: {row['measured_s']} s (target <= {row['target_s']} s) "
              f"{'met' if row['met'] else 'MISSED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
