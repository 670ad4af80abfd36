#!/usr/bin/env python
"""EnhancingDFQ's generator cost per image against D4C's, on the same machine at the same time.

    python benchmarks/bench_enhancing_dfq.py                       # tiny-vit, tiny-rn; widths 128 and 32
    python benchmarks/bench_enhancing_dfq.py --models random:ViT-B/32 --widths 128 --device cuda

D4C's cost is seconds per outer iteration over ``--num_images`` images (mini-batches of
``--gen_batch_size``, the reference schedule); EnhancingDFQ's is seconds per generator step of one
batch of ``--gen_batch_size``. Measurements alternate between the methods for ``--rounds`` rounds
(each ``--iters`` timed iterations after one untimed), so other jobs on a shared machine slow both
alike; the medians are reported. From them: D4C's seconds per image for ``--d4c_iter`` iterations,
and the generator steps that cost the same (``equal_cost_steps``) for the calibration set of
``--num_images`` images. Writes ``benchmarks/results/enhancing_dfq.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from common import environment, synchronize  # noqa: E402  (also puts the repository on sys.path)

from d4c.data.prompts import DIGITS_PROMPTS, GENERIC_PROMPTS, load_prompt_file  # noqa: E402
from d4c.generation.engine import generate  # noqa: E402
from d4c.generation.settings import GenerationSettings  # noqa: E402
from d4c.io import write_json  # noqa: E402
from d4c.models.loading import load_clip  # noqa: E402
from d4c.runtime import resolve_device  # noqa: E402


def _per_iteration(model, settings: GenerationSettings, prompts: list[str], device: torch.device) -> list[float]:
    """Seconds of each iteration after the first (outer iterations, or generator steps)."""
    marks: list[float] = []

    def mark(done: int) -> None:
        synchronize(device)
        marks.append(time.perf_counter())

    generate(model, settings, device, prompts, progress=False, on_iteration=mark)
    return [b - a for a, b in zip(marks, marks[1:])]


def measure(name: str, args: argparse.Namespace, device: torch.device) -> list[dict]:
    loaded = load_clip(name, device)
    prompts = load_prompt_file(str(DIGITS_PROMPTS if name.startswith("tiny") else GENERIC_PROMPTS)).prompts()
    common = dict(num_images=args.num_images, gen_batch_size=args.gen_batch_size, gen_iter=args.iters + 1,
                  gen_ckpt_every=0)
    variants = {f"d4c{c}": GenerationSettings(method="d4c", **common, options={"d4c_config": c})
                for c in args.d4c_configs}
    for width in args.widths:  # warm-up 0.5: the classifiers' steps are timed too
        variants[f"enhancing_dfq width {width}"] = GenerationSettings(
            method="enhancing_dfq", **common, options={"edfq": [f"width={width},warmup=0.5"]})
    times: dict[str, list[float]] = {key: [] for key in variants}
    for _ in range(args.rounds):
        for key, settings in variants.items():
            times[key] += _per_iteration(loaded.model, settings, prompts, device)
    rows = []
    d4c_reference = None
    for key, values in times.items():
        median = statistics.median(values)
        row = {"model": name, "method": key, "median_seconds": round(median, 5), "min_seconds": round(min(values), 5),
               "samples": len(values)}
        if key.startswith("d4c"):
            row["unit"] = f"outer iteration over {args.num_images} images"
            row["seconds_per_image"] = round(median * args.d4c_iter / args.num_images, 4)
            d4c_reference = d4c_reference or (key, median)
        else:
            row["unit"] = f"generator step of {args.gen_batch_size} images"
            reference_key, reference = d4c_reference
            row["equal_cost_steps"] = int(round(reference * args.d4c_iter / median))
            row["equal_to"] = f"{reference_key} x {args.d4c_iter} iterations"
            row["seconds_per_image_at_steps"] = {
                str(steps): round(median * steps / args.num_images, 4) for steps in args.steps}
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny-vit", "tiny-rn"])
    parser.add_argument("--widths", nargs="+", type=int, default=[128, 32], help="generator widths")
    parser.add_argument("--d4c_configs", nargs="+", type=int, default=[3, 0], help="the first is the reference")
    parser.add_argument("--num_images", type=int, default=32)
    parser.add_argument("--gen_batch_size", type=int, default=16)
    parser.add_argument("--d4c_iter", type=int, default=100, help="D4C iterations the cost is compared at")
    parser.add_argument("--steps", nargs="+", type=int, default=[200, 400], help="generator steps to cost")
    parser.add_argument("--iters", type=int, default=4, help="timed iterations per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output", default=str(Path(__file__).resolve().parent / "results" / "enhancing_dfq.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    rows = []
    for name in args.models:
        for row in measure(name, args, device):
            rows.append(row)
            extra = (f"{row['seconds_per_image']:.3f} s/image at {args.d4c_iter} iterations"
                     if "seconds_per_image" in row
                     else f"equal cost: {row['equal_cost_steps']} steps; s/image {row['seconds_per_image_at_steps']}")
            print(f"{row['model']:<10} {row['method']:<26} {row['median_seconds']:.4f} s per {row['unit']}; {extra}",
                  flush=True)
    write_json(args.output, {"benchmark": "enhancing_dfq", "environment": environment(device),
                             "load_average": {"before": load_before,
                                              "after": os.getloadavg() if hasattr(os, "getloadavg") else None},
                             "settings": vars(args), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows})
    print(f"written {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
