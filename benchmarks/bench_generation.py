#!/usr/bin/env python
"""Seconds per outer generation iteration, per method, schedule and model.

    python benchmarks/bench_generation.py                 # CPU: tiny-vit, tiny-rn, random:small-vit, random:small-rn
    python benchmarks/bench_generation.py --full          # GPU: random:ViT-B/32, random:RN50 with 128 images

Each row runs ``--warmup`` + ``--iters`` outer iterations through the real engine
(:func:`d4c.generation.engine.generate`) and reports the median (and minimum) time of the timed
iterations (Gaussian noise: the time of drawing the images). Default settings follow the benchmark issue:
32 images, gen_batch_size 16. Prints a table and writes JSON (device, torch, threads, settings,
the reference implementation's figures) to ``benchmarks/results/generation.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from common import RESULTS_DIR, environment, matmul_gflops, step_flops  # noqa: E402  (also puts the repository on sys.path)

from d4c.data.prompts import DIGITS_PROMPTS, GENERIC_PROMPTS, load_prompt_file  # noqa: E402
from d4c.generation import GenerationSettings, generate, resolve_method, settings_for_row  # noqa: E402
from d4c.io import write_json  # noqa: E402
from d4c.models.loading import load_clip  # noqa: E402
from d4c.runtime import resolve_device  # noqa: E402

# Reference implementation, this 2-core CPU, 32 images, gen_batch_size 16, reference schedule (s/iter).
REFERENCE_CPU = {
    ("random:small-vit", "d4c3"): 0.94, ("random:small-rn", "d4c3"): 1.89,
    ("random:small-vit", "d4c0"): 0.32, ("random:small-rn", "d4c0"): 0.86,
    ("random:small-vit", "pse"): 2.38, ("random:small-rn", "bns"): 1.19,
}
CPU_MODELS = ["tiny-vit", "tiny-rn", "random:small-vit", "random:small-rn"]
FULL_MODELS = ["random:RN50", "random:ViT-B/32", "random:ViT-B/16"]
METHODS = ["gaussian", "baseline", "d4c0", "d4c1", "d4c2", "d4c3"]


def _settings(row: str, model: torch.nn.Module, schedule: str, args: argparse.Namespace,
              iterations: int) -> GenerationSettings:
    """The settings of paper row ``row`` on ``model`` (``baseline`` resolved to BNS or PSE)."""
    settings = settings_for_row(row, GenerationSettings(num_images=args.num_images, gen_batch_size=args.gen_batch_size,
                                                        gen_iter=iterations, gen_schedule=schedule, gen_ckpt_every=0))
    return dataclasses.replace(settings, method=resolve_method(settings.method, model))


def time_row(loaded, method: str, schedule: str, args: argparse.Namespace, device: torch.device,
             prompts: list[str]) -> dict:
    """Mean seconds per timed outer iteration of one (model, method, schedule)."""
    settings = _settings(method, loaded.model, schedule, args, args.warmup + args.iters)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    if settings.method == "gaussian":
        sync()
        start = time.perf_counter()
        generate(loaded.model, settings, device, progress=False)
        sync()
        return {"model": loaded.name, "method": method, "schedule": schedule, "resolved": "gaussian",
                "init_seconds": round(time.perf_counter() - start, 4), "seconds_per_iteration": None}
    marks: list[float] = []

    def mark(done: int) -> None:
        sync()
        marks.append(time.perf_counter())

    sync()
    start = time.perf_counter()
    generate(loaded.model, settings, device, prompts, progress=False, on_iteration=mark)
    timed = marks[args.warmup - 1:] if args.warmup else [start] + marks
    deltas = sorted(b - a for a, b in zip(timed, timed[1:]))
    # The median iteration: robust to other processes' bursts on a shared machine.
    per_iteration = statistics.median(deltas)
    row = {"model": loaded.name, "method": method, "schedule": schedule, "resolved": settings.method,
           "seconds_per_iteration": round(per_iteration, 4), "min_seconds_per_iteration": round(deltas[0], 4),
           "seconds_per_step": round(per_iteration / settings.steps_per_iteration, 4),
           "setup_seconds": round(marks[0] - start - (marks[1] - marks[0] if len(marks) > 1 else 0), 4)}
    reference = REFERENCE_CPU.get((loaded.name, method if method != "baseline" else settings.method))
    if reference and device.type == "cpu" and schedule == "reference":
        row["reference_implementation_seconds"] = reference
        row["speedup_vs_reference"] = round(reference / per_iteration, 2)
    if args.gemm_gflops and (reference or device.type == "cuda"):
        def iterations(count: int) -> int:  # FLOPs of count iterations and the setup (text targets)
            short = dataclasses.replace(settings, gen_iter=count)
            return step_flops(lambda: generate(loaded.model, short, device,
                                               prompts if short.method == "d4c" else None, progress=False))

        flops = iterations(2) - iterations(1)
        row["gflop_per_iteration"] = round(flops / 1e9, 2)
        row["machine_fraction"] = round(flops / per_iteration / 1e9 / args.gemm_gflops, 3)
    return row


def render(rows: list[dict]) -> str:
    lines = [f"{'model':<18} {'method':<9} {'schedule':<9} {'s/iter':>8} {'s/step':>8} {'ref s/iter':>10} {'speedup':>8}"]
    for r in rows:
        if r["seconds_per_iteration"] is None:
            lines.append(f"{r['model']:<18} {r['method']:<9} {r['schedule']:<9} {'init ' + format(r['init_seconds'], '.3f'):>8}")
            continue
        ref = r.get("reference_implementation_seconds")
        lines.append(f"{r['model']:<18} {r['method'] + ('/' + r['resolved'] if r['method'] == 'baseline' else ''):<9} "
                     f"{r['schedule']:<9} {r['seconds_per_iteration']:>8.3f} {r['seconds_per_step']:>8.3f} "
                     f"{(format(ref, '.2f') if ref else '-'):>10} "
                     f"{(format(r['speedup_vs_reference'], '.2f') + 'x' if ref else '-'):>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="GPU sizes: random:ViT-B/32 and random:RN50, 128 images")
    parser.add_argument("--models", nargs="+", default=None, help="models (default: the four small CPU models)")
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--schedules", nargs="+", default=["reference", "batched"], choices=["reference", "batched"])
    parser.add_argument("--num_images", type=int, default=None, help="default 32 (128 with --full)")
    parser.add_argument("--gen_batch_size", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=1, help="untimed outer iterations first")
    parser.add_argument("--iters", type=int, default=3, help="timed outer iterations")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--prompts", default=None, help="prompt file for D4C (default: generic; digits for the zoo)")
    parser.add_argument("--output", default=str(RESULTS_DIR / "generation.json"))
    parser.add_argument("--no_flops", action="store_true",
                        help="skip counting each timed row's matrix-product FLOPs (one more iteration per row)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.num_images = args.num_images or (128 if args.full else 32)
    models = args.models or (FULL_MODELS if args.full else CPU_MODELS)
    device = resolve_device(args.device)
    args.gemm_gflops = None if args.no_flops else matmul_gflops(device)
    rows = []
    for name in models:
        loaded = load_clip(name, device)
        prompt_file = args.prompts or str(DIGITS_PROMPTS if name.startswith("tiny") else GENERIC_PROMPTS)
        prompts = load_prompt_file(prompt_file).prompts()
        for method in args.methods:
            for schedule in (args.schedules if method != "gaussian" else ["reference"]):
                row = time_row(loaded, method, schedule, args, device, prompts)
                rows.append(row)
                print(render([row]).splitlines()[1], flush=True)
    print()
    print(render(rows))
    record = {
        "benchmark": "generation", "environment": environment(device),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "settings": {"num_images": args.num_images, "gen_batch_size": args.gen_batch_size, "warmup": args.warmup,
                     "iters": args.iters, "models": models, "methods": args.methods, "schedules": args.schedules,
                     "matmul_gflops": args.gemm_gflops},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows,
    }
    write_json(args.output, record)
    print(f"\nwritten {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
