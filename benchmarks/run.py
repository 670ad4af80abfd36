#!/usr/bin/env python
"""Run every benchmark, then compare the figures with the performance targets (benchmark issue).

    python benchmarks/run.py               # CPU suite, short iteration counts (7 min on 2 cores)
    python benchmarks/run.py --full        # GPU suite: adds full-size random RN50 / ViT-B/32 / ViT-B/16
    python benchmarks/run.py --summary_only    # rebuild the summary from the JSON already written

Each benchmark is its own script (run here as a subprocess, so one failure does not stop the
others) and writes ``benchmarks/results/<name>.json`` with the device, torch version and settings.
This script then writes ``benchmarks/results/summary.json`` and prints, per target, the measured
figure, the reference figure and whether the target is met; with ``--readme`` it also replaces the
table between ``<!-- perf-table:start -->`` and ``<!-- perf-table:end -->`` in README.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(REPO))

START, END = "<!-- perf-table:start -->", "<!-- perf-table:end -->"

# (script, CPU arguments, extra arguments with --full)
SUITE = [
    ("bench_evaluation.py", [], ["--full"]),
    ("bench_calibration.py", ["--models", "tiny-vit", "tiny-rn", "random:small-vit", "random:small-rn",
                              "--observers", "MinMaxObserver", "MSEObserver"], ["--full"]),
    ("bench_mse_search.py", ["--quick"], []),
    ("bench_generation.py", ["--warmup", "1", "--iters", "4"], ["--full"]),
    ("bench_reconstruction.py", ["--quick"], ["--full"]),
]

# Reference implementation on the same 2-core CPU (benchmark issue), with the speed-up targets.
CALIBRATION_REFERENCE_S = {"random:small-vit": 4500.0, "random:small-rn": 3600.0}
GENERATION_TARGETS = [  # (model, method as the benchmark resolves it, reference s/iter, target speed-up)
    ("random:small-vit", "pse", 2.38, 2.5), ("random:small-vit", "d4c3", 0.94, 1.2),
    ("random:small-vit", "d4c0", 0.32, 1.2), ("random:small-rn", "bns", 1.19, 1.2),
    ("random:small-rn", "d4c3", 1.89, 1.2), ("random:small-rn", "d4c0", 0.86, 1.2),
]
RECON_TARGETS = [("random:small-vit", "linear", 0.0089, 1.5), ("random:small-rn", "bottleneck", 0.53, 1.5)]


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _row(stage: str, what: str, measured: float | None, reference: float | None, target: float | None,
         unit: str) -> dict:
    speedup = reference / measured if measured and reference else None
    met = None if speedup is None or target is None else speedup >= target
    return {"stage": stage, "what": what, "measured": measured, "reference": reference, "unit": unit,
            "speedup": None if speedup is None else round(speedup, 2), "target_speedup": target, "met": met}


def compare() -> list[dict]:
    """One row per target (and per informative figure) from the benchmark JSON files."""
    rows = []
    calibration = _load("calibration")
    for model, reference in CALIBRATION_REFERENCE_S.items():
        found = [r for r in (calibration or {}).get("records", [])
                 if r["model"] == model and r["observer"] == "MSEObserver"]
        measured = found[0]["activation_s"] if found else None
        rows.append(_row("calibration", f"{model} activation observers (MSEObserver)", measured, reference, 50.0, "s"))
    mse = _load("mse_search")
    if mse:
        total = mse.get("total", {})
        rows.append(_row("calibration", "MSE search of the small ViT's quantizer inputs (reference estimated)",
                         total.get("fast_s"), total.get("reference_est_s"), 50.0, "s"))
    generation = _load("generation")
    for model, method, reference, target in GENERATION_TARGETS:
        found = [r for r in (generation or {}).get("rows", []) if r["model"] == model
                 and r["schedule"] == "reference" and method in (r["method"], r.get("resolved"))]
        measured = found[0].get("seconds_per_iteration") if found else None
        rows.append(_row("generation", f"{model} {method}, reference schedule", measured, reference, target, "s/iter"))
    recon = _load("reconstruction")
    for model, kind, reference, target in RECON_TARGETS:
        found = [r["s_per_iter"] for r in (recon or {}).get("records", []) if r["model"] == model and r["kind"] == kind]
        measured = statistics.mean(found) if found else None
        label = "mean over the first block's linear units" if kind == "linear" else "first Bottleneck"
        rows.append(_row("reconstruction", f"{model} {kind} ({label})", measured, reference, target, "s/iter"))
    evaluation = _load("evaluation")
    for r in (evaluation or {}).get("records", []):
        rows.append(_row("evaluation", f"{r['model']} end to end (images/s)", r.get("end_to_end_img_per_s"),
                         None, None, "img/s"))
    return rows


def _environment() -> dict:
    for name in ("reconstruction", "calibration", "evaluation"):
        record = _load(name)
        if record and "environment" in record:
            return record["environment"]
    return {}


def render(rows: list[dict], environment: dict) -> str:
    lines = ["| stage | figure | measured | reference | speed-up | target | met |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        measured = "–" if r["measured"] is None else f"{r['measured']:.4g} {r['unit']}"
        reference = "–" if r["reference"] is None else f"{r['reference']:.4g} {r['unit']}"
        speedup = "–" if r["speedup"] is None else f"{r['speedup']:.2f}×"
        target = "–" if r["target_speedup"] is None else f"≥ {r['target_speedup']:g}×"
        met = {True: "yes", False: "**no**", None: "–"}[r["met"]]
        lines.append(f"| {r['stage']} | {r['what']} | {measured} | {reference} | {speedup} | {target} | {met} |")
    machine = ", ".join(f"{k} {environment[k]}" for k in ("type", "name", "cpu_count", "torch") if k in environment)
    lines += ["", f"Machine: {machine or 'unknown'}; `python benchmarks/run.py`, {time.strftime('%Y-%m-%d')}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="GPU mode: add the full-size random models")
    parser.add_argument("--only", nargs="+", default=None, help="run only these benchmark scripts")
    parser.add_argument("--summary_only", action="store_true", help="run nothing, summarise existing JSON")
    parser.add_argument("--readme", action="store_true", help="write the table into README.md")
    args = parser.parse_args(argv)
    timings = {}
    if not args.summary_only:
        for script, cpu_args, full_args in SUITE:
            if args.only and script not in args.only:
                continue
            command = [sys.executable, str(HERE / script), *cpu_args, *(full_args if args.full else [])]
            print(f"== {' '.join(command[1:])}", flush=True)
            began = time.perf_counter()
            status = subprocess.run(command, cwd=REPO).returncode
            timings[script] = round(time.perf_counter() - began, 1)
            print(f"== {script}: {'ok' if status == 0 else f'FAILED (exit {status})'} in {timings[script]} s",
                  flush=True)
    rows = compare()
    environment = _environment()
    from d4c.io import replace_marked_block, write_json

    write_json(RESULTS / "summary.json", {"benchmark": "summary", "environment": environment,
                                          "settings": vars(args), "script_seconds": timings, "targets": rows})
    table = render(rows, environment)
    print("\n" + table)
    if args.readme:
        readme = REPO / "README.md"
        try:
            replace_marked_block(readme, START, END, table)
        except ValueError as error:
            raise SystemExit(f"run.py: error: README.md has {error}.") from None
        print(f"updated {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
