#!/usr/bin/env python
"""The batched schedule's effect on the pseudo images themselves (no quantization needed).

    python benchmarks/bench_schedule_effect.py                  # tiny-vit, tiny-rn; d4c0, d4c3, baseline
    python benchmarks/bench_schedule_effect.py --gen_iter 100 --methods d4c3

For each zoo model, method and schedule (reference, batched) it generates 128 images with the
digits prompts (the README table's recipe, so the images land in the same cache) and measures
them with the full-precision model (:func:`d4c.generation.diagnostics.image_diagnostics`): final
loss, PGSI cross-entropy and top-1 agreement with the target prompt (D4C), BN-statistics distance
(ResNet), feature diversity, plus generation seconds. Writes ``benchmarks/results/schedule_effect.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from common import RESULTS_DIR, environment  # noqa: E402  (also puts the repository on sys.path)

from d4c.data.prompts import DIGITS_PROMPTS, load_prompt_file  # noqa: E402
from d4c.generation import GenerationSettings, settings_for_row, synthesize  # noqa: E402
from d4c.generation.cache import PseudoImageCache  # noqa: E402
from d4c.generation.diagnostics import image_diagnostics  # noqa: E402
from d4c.io import write_json  # noqa: E402
from d4c.models.loading import load_clip  # noqa: E402
from d4c.runtime import resolve_device  # noqa: E402

COLUMNS = ["final_loss", "pgsi_cross_entropy", "target_top1_agreement", "bn_statistics_distance",
           "feature_mean_cosine", "generation_seconds"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny-vit", "tiny-rn"])
    parser.add_argument("--methods", nargs="+", default=["d4c0", "d4c3", "baseline"])
    parser.add_argument("--gen_iter", type=int, default=200)
    parser.add_argument("--num_images", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--gen_cache_dir", default="./cache/pseudo_images")
    parser.add_argument("--output", default=str(RESULTS_DIR / "schedule_effect.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    prompts = load_prompt_file(str(DIGITS_PROMPTS)).prompts()
    cache = PseudoImageCache.from_flag(args.gen_cache_dir)
    rows = []
    for name in args.models:
        loaded = load_clip(name, device)
        for method in args.methods:
            for schedule in ("reference", "batched"):
                base = GenerationSettings(num_images=args.num_images, gen_iter=args.gen_iter, seed=args.seed,
                                          gen_schedule=schedule)
                outcome = synthesize(settings_for_row(method, base), loaded, device, prompts, cache=cache,
                                     progress=False)
                resolved = outcome.settings.method
                cached = None
                if outcome.from_cache:  # the cache's recipe JSON holds the original time and loss
                    cached = json.loads(outcome.cache_path.with_suffix(".json").read_text())
                row = {"model": name, "method": method, "resolved": resolved, "schedule": schedule,
                       "final_loss": outcome.final_loss if cached is None else cached["final_loss"],
                       "generation_seconds": round(outcome.generation_seconds if cached is None else cached["seconds"], 1),
                       "from_cache": outcome.from_cache,
                       **image_diagnostics(loaded.model, outcome.images, prompts, outcome.targets)}
                rows.append(row)
                print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    header = f"{'model':<9} {'method':<9} {'schedule':<9} " + " ".join(f"{c[:14]:>14}" for c in COLUMNS)
    print("\n" + header)
    for r in rows:
        cells = " ".join(f"{r[c]:>14.4f}" if isinstance(r.get(c), float) else f"{'-':>14}" for c in COLUMNS)
        print(f"{r['model']:<9} {r['method']:<9} {r['schedule']:<9} {cells}")
    write_json(args.output, {"benchmark": "schedule_effect", "environment": environment(device), "settings": vars(args),
                             "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows})
    print(f"\nwritten {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
