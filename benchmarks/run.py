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
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = Path(os.environ.get("D4C_BENCH_RESULTS") or HERE / "results")
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
    ("bench_whole_run.py", [], ["--models", "random:small-vit", "random:small-rn", "random:ViT-B/32"]),
]
GPU_MODELS = ["random:RN50", "random:ViT-B/32", "random:ViT-B/16"]
# benchmarks/gpu_check.sh: the --full figures cut to its time budget (the whole run is a part of its own).
GPU_CHECK_SUITE = [
    ("bench_evaluation.py", ["--models", *GPU_MODELS]),
    ("bench_calibration.py", ["--models", *GPU_MODELS, "--observers", "MSEObserver"]),
    ("bench_generation.py", ["--models", *GPU_MODELS, "--methods", "baseline", "d4c0", "d4c3", "--warmup", "1",
                             "--iters", "2", "--num_images", "128"]),
    ("bench_reconstruction.py", ["--models", *GPU_MODELS, "--quick", "--compile_models", "random:ViT-B/32"]),
]
# benchmarks/gpu_check.sh --cpu: every script once at the smallest sizes (CI).
CPU_SMOKE_SUITE = [
    ("bench_evaluation.py", ["--models", "tiny-vit"]),
    ("bench_calibration.py", ["--models", "tiny-vit", "--observers", "MinMaxObserver"]),
    ("bench_generation.py", ["--models", "tiny-vit", "--methods", "d4c0", "--schedules", "reference", "--warmup",
                             "1", "--iters", "1"]),
    ("bench_reconstruction.py", ["--models", "tiny-vit", "--num_images", "32", "--warmup", "1", "--iters", "2",
                                 "--no_compile"]),
]

# Reference implementation on the same 2-core CPU (benchmark issue), with the speed-up targets.
CALIBRATION_REFERENCE_S = {"random:small-vit": 4500.0, "random:small-rn": 3600.0}
GENERATION_TARGETS = [  # (model, method as the benchmark resolves it, reference s/iter, target speed-up)
    ("random:small-vit", "pse", 2.38, 2.5), ("random:small-vit", "d4c3", 0.94, 1.2),
    ("random:small-vit", "d4c0", 0.32, 1.2), ("random:small-rn", "bns", 1.19, 1.2),
    ("random:small-rn", "d4c3", 1.89, 1.2), ("random:small-rn", "d4c0", 0.86, 1.2),
]
# The reference's "ViT linear unit" is a 256 -> 256 unit: our q/k/v units (the out projection and the MLP's
# 256 -> 1024 -> 256 units are listed without a reference).
RECON_TARGETS = [("random:small-vit", "qkv", 0.0089, 1.5), ("random:small-rn", "bottleneck", 0.53, 1.5)]
PAPER_RECON_ITERS = 20000
GPU_GENERATION_TARGETS = [("random:ViT-B/32", "d4c3", "reference", 150.0), ("random:ViT-B/32", "d4c3", "batched", 60.0)]
REFERENCE_NOTE = (
    "The reference column holds the reference implementation's figures from the benchmark issue: fixed numbers, "
    "measured on another day, while the measured column comes from this machine as it was during this run "
    "(load average {load}). A ratio between the two mixes two states of a shared machine; issue 16's side-by-side "
    "measurement of both implementations in one sitting is the fairer comparison. The machine column is the share "
    "of this machine's float32 matrix-product rate ({gemm} GFLOP/s, measured in the same run) that the step's "
    "matrix products and convolutions reach.")


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _row(stage: str, what: str, measured: float | None, reference: float | None, target: float | None,
         unit: str, machine: float | None = None) -> dict:
    speedup = reference / measured if measured and reference else None
    met = None if speedup is None or target is None else speedup >= target
    return {"stage": stage, "what": what, "measured": measured, "reference": reference, "unit": unit,
            "speedup": None if speedup is None else round(speedup, 2), "target_speedup": target, "met": met,
            "machine_fraction": machine}


def _device(record: dict | None) -> str | None:
    """The device type a benchmark file was measured on."""
    environment = (record or {}).get("environment", {})
    return environment.get("type", environment.get("device"))


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.mean(values), 5) if values else None


def _reconstruction_rows(recon: dict | None) -> list[dict]:
    rows = []
    records = [r for r in (recon or {}).get("records", []) if "eager_s" in r]  # (older files: other columns)
    targets = {(m, k): (ref, t) for m, k, ref, t in RECON_TARGETS}
    for model, kind in dict.fromkeys((r["model"], r["kind"]) for r in records):
        found = [r for r in records if r["model"] == model and r["kind"] == kind]
        cpu = found[0].get("reference_s") is not None or (model, kind) in targets
        reference, target = targets.get((model, kind), (None, None)) if cpu and _device(recon) == "cpu" \
            else (None, None)
        label = {"qkv": "q/k/v units", "out_proj": "out-projection unit", "mlp": "MLP units (c_fc, c_proj)",
                 "bottleneck": "first Bottleneck"}[kind]
        rows.append(_row("reconstruction", f"{model} {label}, eager", _mean([r["eager_s"] for r in found]), reference,
                         target, "s/step", _mean([r.get("eager_machine_fraction") for r in found])))
        compiled = _mean([r.get("compiled_s") for r in found])
        if compiled is not None:
            compile_s = sum(r.get("compile_s", 0.0) for r in found)
            amortised = compiled + compile_s / PAPER_RECON_ITERS / len(found)
            rows.append(_row("reconstruction", f"{model} {label}, compiled ({compile_s:.0f} s of compilation "
                             f"spread over {PAPER_RECON_ITERS:,} steps per unit)", round(amortised, 5), reference,
                             target, "s/step", _mean([r.get("compiled_machine_fraction") for r in found])))
    return rows


def _whole_run_rows(whole: dict | None) -> list[dict]:
    rows = []
    for r in (whole or {}).get("records", []):
        stages = r["stages_s"]
        measured = ", ".join(f"{k} {stages[k]:.1f}" for k in ("generation", "calibration", "reconstruction",
                                                               "evaluation") if stages.get(k) is not None)
        peak = max((m.get("cuda_max_allocated", m.get("rss", 0.0)) for m in r["peak_memory_mb"].values()),
                   default=0.0)
        rows.append(_row("whole run", f"{r['model']} D4C-3 W4A8, {r['gen_iter']} generation iterations, "
                         f"{r['recon_iters']} steps per unit ({measured} s; peak {peak:.0f} MB)",
                         stages.get("total"), None, None, "s"))
        paper = r["paper_s"]
        rows.append(_row("whole run", f"{r['model']} extrapolated to 3000 iterations and 20,000 steps per unit "
                         f"(generation {paper['generation']:.0f} s, reconstruction {paper['reconstruction']:.0f} s)",
                         paper["total"], None, None, "s"))
    return rows


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
    gen_rows = (generation or {}).get("rows", [])
    for model, method, reference, target in GENERATION_TARGETS:
        found = [r for r in gen_rows if r["model"] == model
                 and r["schedule"] == "reference" and method in (r["method"], r.get("resolved"))]
        measured = found[0].get("seconds_per_iteration") if found else None
        rows.append(_row("generation", f"{model} {method}, reference schedule", measured, reference, target, "s/iter",
                         found[0].get("machine_fraction") if found else None))
    if _device(generation) == "cuda":
        for model, method, schedule, target_s in GPU_GENERATION_TARGETS:
            found = [r for r in gen_rows if r["model"] == model and r["schedule"] == schedule and r["method"] == method
                     and r.get("seconds_per_iteration")]
            if found and generation["settings"]["num_images"] == 128:
                paper = found[0]["seconds_per_iteration"] * 3000
                row = _row("generation", f"{model} {method}, {schedule} schedule, 128 images x 3000 iterations "
                           f"(target <= {target_s:g} s)", round(paper, 1), None, None, "s",
                           found[0].get("machine_fraction"))
                row["met"] = paper <= target_s
                rows.append(row)
    rows += _reconstruction_rows(_load("reconstruction"))
    rows += _whole_run_rows(_load("whole_run"))
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


def render(rows: list[dict], environment: dict, gemm: float | None = None) -> str:
    lines = ["| stage | figure | measured | reference | speed-up | target | met | machine |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        measured = "–" if r["measured"] is None else f"{r['measured']:.4g} {r['unit']}"
        reference = "–" if r["reference"] is None else f"{r['reference']:.4g} {r['unit']}"
        speedup = "–" if r["speedup"] is None else f"{r['speedup']:.2f}×"
        target = "–" if r["target_speedup"] is None else f"≥ {r['target_speedup']:g}×"
        met = {True: "yes", False: "**no**", None: "–"}[r["met"]]
        machine = "–" if r.get("machine_fraction") is None else f"{100 * r['machine_fraction']:.0f} %"
        lines.append(f"| {r['stage']} | {r['what']} | {measured} | {reference} | {speedup} | {target} | {met} "
                     f"| {machine} |")
    machine = ", ".join(f"{k} {environment[k]}" for k in ("type", "name", "cpu_count", "torch") if k in environment)
    load = environment.get("load_average")
    load = "unknown" if not load else " / ".join(f"{v:.1f}" for v in load)
    lines += ["", f"Machine: {machine or 'unknown'}; `python benchmarks/run.py`, {time.strftime('%Y-%m-%d')}.",
              "", REFERENCE_NOTE.format(load=load, gemm="?" if gemm is None else f"{gemm:g}")]
    return "\n".join(lines)


def _gemm() -> float | None:
    for name in ("reconstruction", "generation"):
        record = _load(name)
        records = (record or {}).get("records", [])
        if records and records[0].get("machine_gflops"):
            return records[0]["machine_gflops"]
        if record and record.get("settings", {}).get("matmul_gflops"):
            return record["settings"]["matmul_gflops"]
    return None


def _suite(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    if args.gpu_check:
        return GPU_CHECK_SUITE
    if args.cpu_smoke:
        return CPU_SMOKE_SUITE
    return [(script, [*cpu, *(full if args.full else [])]) for script, cpu, full in SUITE]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="GPU mode: add the full-size random models")
    parser.add_argument("--gpu_check", action="store_true", help="the --full figures cut for benchmarks/gpu_check.sh")
    parser.add_argument("--cpu_smoke", action="store_true", help="every script once at the smallest sizes (CI)")
    parser.add_argument("--only", nargs="+", default=None, help="run only these benchmark scripts")
    parser.add_argument("--summary_only", action="store_true", help="run nothing, summarise existing JSON")
    parser.add_argument("--readme", action="store_true", help="write the table into README.md")
    args = parser.parse_args(argv)
    timings = {}
    if not args.summary_only:
        for script, script_args in _suite(args):
            if args.only and script not in args.only:
                continue
            command = [sys.executable, str(HERE / script), *script_args]
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
                                          "settings": vars(args), "script_seconds": timings,
                                          "matmul_gflops": _gemm(), "targets": rows})
    table = render(rows, environment, _gemm())
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
