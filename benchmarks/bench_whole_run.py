#!/usr/bin/env python
"""One whole paper run (generation -> calibration -> reconstruction -> evaluation) with cut iteration
counts: every stage's seconds and peak memory, and the run extrapolated to the paper's counts.

    python benchmarks/bench_whole_run.py                           # CPU: random:small-vit, random:small-rn
    python benchmarks/bench_whole_run.py --models random:ViT-B/32 --schedules reference batched --compile off on

Each run is the command line itself (``d4c/solver/test_quant.py``, the paper's D4C row: ``--dfq
--gen_img --d4c_config 3 --recon``, W4A8 = ``exp/config48.yaml``: 128 images, 512 texts) in its own
process, evaluated on the offline digits test split. It runs twice per setting, ``--gen_iter`` and
``--recon_iters`` the first time and twice as many the second, each with empty caches (pseudo
images, inductor), so that the difference separates the cost of one more generation iteration and
of one more reconstruction step of each unit from the fixed costs (text targets, caching unit
inputs, losses before and after, compilation). The paper's run is then

* generation: fixed + 3000 x (seconds per iteration of 128 images);
* reconstruction: the sum over units of fixed + 20,000 x (seconds per step);
* calibration and load as measured; evaluation as images per second over CIFAR-10's 10,000 test images.

Stage seconds, peak memory per stage (resident size; on CUDA ``max_memory_allocated``) and the
extrapolation go to ``benchmarks/results/whole_run.json`` and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO_ROOT, RESULTS_DIR, format_table, write_results


from d4c.acceleration import compile_generation, compile_reconstruction
from d4c.runtime import resolve_device

ENTRY = REPO_ROOT / "d4c" / "solver" / "test_quant.py"
PAPER_GEN_ITER = 3000
PAPER_RECON_ITERS = 20000
CIFAR10_TEST_IMAGES = 10000
DIGITS_TEST_IMAGES = 539
# ViT-B/32 targets on one GPU (benchmark issue): D4C generation of 128 images x 3000 iterations, whole reconstruction.
GPU_TARGETS_S = {("random:ViT-B/32", "generation", "reference"): 150.0,
                 ("random:ViT-B/32", "generation", "batched"): 60.0,
                 ("random:ViT-B/32", "reconstruction", None): 1800.0}


def run_cli(model: str, gen_iter: int, recon_iters: int, schedule: str, compile: str, device: str, workdir: Path,
            q_config: str, threads: int | None) -> tuple[dict, dict, float]:
    """One run of the command line with empty caches; its result record, its cache entry's record, wall seconds."""
    cache, inductor = workdir / "pseudo_images", workdir / "inductor"
    output = workdir / "result.json"
    command = [sys.executable, str(ENTRY), "--model", model, "--dataset", "digits", "--num_workers", "0",
               "--q_config", q_config, "--dfq", "--gen_img", "--d4c_config", "3", "--gen_iter", str(gen_iter),
               "--gen_schedule", schedule, "--gen_ckpt_every", "0", "--gen_cache_dir", str(cache), "--recon",
               "--recon_iters", str(recon_iters), "--compile", compile, "--device", device, "--output", str(output)]
    env = {**os.environ, "D4C_OFFLINE": "1", "TORCHINDUCTOR_CACHE_DIR": str(inductor)}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    began = time.perf_counter()
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"bench_whole_run.py: the run failed ({' '.join(command)}):\n{done.stderr[-3000:]}")
    record = json.loads(output.read_text())
    entries = [json.loads(p.read_text()) for p in cache.glob("*.json")]
    return record, (entries[0] if entries else {}), wall


def _unit_loops(record: dict) -> dict[str, tuple[float, float, int]]:
    """Per unit: (all seconds, loop seconds, steps)."""
    return {u["name"]: (u["seconds"], u["seconds_per_iter"] * u["iters"], u["iters"])
            for u in record.get("reconstruction_units", [])}


def extrapolate(short: tuple[dict, dict], long: tuple[dict, dict], gen_iters: tuple[int, int],
                compiled: tuple[bool, bool]) -> dict:
    """The paper-length stage seconds from a short and a long run (module docstring).

    Eager loops cost the same every step, so the long run's mean step is the per-step cost; a compiled
    loop's first steps include compilation, so there the per-step cost is the difference of the two
    runs' loops over the difference of their steps. ``compiled``: (generation, reconstruction).
    """
    (rec_a, cache_a), (rec_b, cache_b) = short, long
    gen_a, gen_b = cache_a.get("seconds", 0.0), cache_b.get("seconds", 0.0)
    per_iteration = (gen_b - gen_a) / (gen_iters[1] - gen_iters[0]) if compiled[0] else gen_b / gen_iters[1]
    generation_fixed = rec_a["timings_s"]["generation"] - gen_iters[0] * per_iteration
    units_a, units_b = _unit_loops(rec_a), _unit_loops(rec_b)
    recon_fixed = recon_steps = 0.0
    per_step = {}
    for name, (seconds_a, loop_a, iters_a) in units_a.items():
        _, loop_b, iters_b = units_b[name]
        step = max((loop_b - loop_a) / (iters_b - iters_a), 0.0) if compiled[1] else loop_b / iters_b
        per_step[name] = step
        recon_fixed += seconds_a - iters_a * step
        recon_steps += PAPER_RECON_ITERS * step
    evaluation_rate = DIGITS_TEST_IMAGES / rec_a["timings_s"]["evaluation"]
    paper = {"load_model": rec_a["timings_s"]["load_model"],
             "generation": generation_fixed + PAPER_GEN_ITER * per_iteration,
             "calibration": rec_a["timings_s"]["calibration"],
             "reconstruction": recon_fixed + recon_steps,
             "evaluation": CIFAR10_TEST_IMAGES / evaluation_rate}
    paper["total"] = sum(paper.values())
    return {"generation_s_per_iteration": round(per_iteration, 4), "generation_fixed_s": round(generation_fixed, 2),
            "reconstruction_fixed_s": round(recon_fixed, 2),
            "reconstruction_s_per_step_sum": round(sum(per_step.values()), 5), "units": len(per_step),
            "evaluation_images_per_s": round(evaluation_rate, 1),
            "paper_s": {k: round(v, 1) for k, v in paper.items()}}


def bench(model: str, schedule: str, compile: str, args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    runs = []
    for factor in (1, 2):
        with tempfile.TemporaryDirectory() as workdir:
            record, cache, wall = run_cli(model, args.gen_iter * factor, args.recon_iters * factor, schedule, compile,
                                          args.device, Path(workdir), args.q_config, args.threads)
        runs.append((record, cache, wall))
    (record, cache, wall), (long_record, long_cache, long_wall) = runs
    row = {"model": model, "schedule": schedule, "compile": compile, "gen_iter": args.gen_iter,
           "recon_iters": args.recon_iters, "wall_s": round(wall, 1), "long_run_wall_s": round(long_wall, 1),
           "stages_s": record["timings_s"], "peak_memory_mb": record.get("peak_memory_mb", {}),
           "acc1": record["metrics"]["acc1"], "device": record["device"],
           **extrapolate((record, cache), (long_record, long_cache), (args.gen_iter, 2 * args.gen_iter),
                         (compile_generation(compile, device), compile_reconstruction(compile, device, 1)))}
    for (name, stage, target_schedule), target in GPU_TARGETS_S.items():
        if name == model and row["device"]["type"] == "cuda" and target_schedule in (None, schedule):
            row.setdefault("targets_s", {})[stage] = target
    return row


def _flat(row: dict) -> dict:
    paper = row["paper_s"]
    peak = max((m.get("cuda_max_allocated", m.get("rss", 0.0)) for m in row["peak_memory_mb"].values()), default=None)
    return {"model": row["model"], "schedule": row["schedule"], "compile": row["compile"],
            **{f"{k}_s": row["stages_s"].get(k) for k in ("generation", "calibration", "reconstruction", "evaluation")},
            "total_s": row["stages_s"].get("total"), "peak_mb": peak,
            "paper_generation_s": paper["generation"], "paper_reconstruction_s": paper["reconstruction"],
            "paper_total_s": paper["total"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["random:small-vit", "random:small-rn"])
    parser.add_argument("--schedules", nargs="+", default=["reference"], choices=["reference", "batched"])
    parser.add_argument("--compile", nargs="+", default=["auto"], choices=["auto", "on", "off"])
    parser.add_argument("--gen_iter", type=int, default=2, help="generation iterations of the short run (the long: 2x)")
    parser.add_argument("--recon_iters", type=int, default=5, help="steps per unit of the short run (the long: 2x)")
    parser.add_argument("--q_config", default="exp/config48.yaml")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the runs (default: torch's)")
    parser.add_argument("--output", default=str(RESULTS_DIR / "whole_run.json"))
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    rows = []
    for model in args.models:
        for schedule in args.schedules:
            for compile in args.compile:
                rows.append(bench(model, schedule, compile, args))
                print(format_table([_flat(rows[-1])], list(_flat(rows[-1]))).splitlines()[-1], flush=True)
    output = Path(args.output)
    path = write_results(output.stem, device, {**vars(args), "paper_gen_iter": PAPER_GEN_ITER,
                                               "paper_recon_iters": PAPER_RECON_ITERS}, rows, out_dir=output.parent)
    flat = [_flat(r) for r in rows]
    print(format_table(flat, list(flat[0])))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
