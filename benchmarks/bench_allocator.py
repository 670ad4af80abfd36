#!/usr/bin/env python
"""The CPU allocator setting (:func:`d4c.runtime.tune_cpu_allocator`) on and off, paired and interleaved.

    python benchmarks/bench_allocator.py                 # 3 pairs: small-rn Bottleneck step, small-rn BNS iteration
    python benchmarks/bench_allocator.py --pairs 5

Each pair runs the same two child benchmarks once with ``D4C_MALLOC_TUNING=0`` and once with the
default (on), alternating which goes first, so that a machine whose speed drifts (other jobs on a
shared machine) affects both alike: the reconstruction step of the first Bottleneck of
``random:small-rn`` (``bench_reconstruction.py``, eager) and a BNS generation iteration of
``random:small-rn`` (``bench_generation.py``). Reports the medians, the median of the per-pair
ratios and the children's minor page faults; writes ``benchmarks/results/allocator.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import RESULTS_DIR, format_table, write_results

import torch

HERE = Path(__file__).resolve().parent


def _child(script: str, args: list[str], tuned: bool, output: Path) -> tuple[dict, int]:
    env = {**os.environ, "D4C_MALLOC_TUNING": "1" if tuned else "0"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
    subprocess.run([sys.executable, str(HERE / script), *args, "--output", str(output)], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(output.read_text()), resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before


def measure(tuned: bool, workdir: Path) -> dict:
    recon, recon_faults = _child("bench_reconstruction.py", ["--models", "random:small-rn", "--no_compile",
                                                             "--warmup", "1", "--iters", "4"], tuned,
                                 workdir / "recon.json")
    generation, gen_faults = _child("bench_generation.py", ["--models", "random:small-rn", "--methods", "baseline",
                                                            "--schedules", "reference", "--warmup", "1", "--iters",
                                                            "2", "--no_flops"], tuned, workdir / "gen.json")
    return {"recon_s_per_step": recon["records"][0]["eager_s"], "recon_minor_faults": recon_faults,
            "bns_s_per_iteration": generation["rows"][0]["seconds_per_iteration"], "bns_minor_faults": gen_faults}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--output", default=str(RESULTS_DIR / "allocator.json"))
    args = parser.parse_args(argv)
    runs: dict[bool, list[dict]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as workdir:
        for pair in range(args.pairs):
            for tuned in ((False, True) if pair % 2 == 0 else (True, False)):
                runs[tuned].append(measure(tuned, Path(workdir)))
                print(f"pair {pair + 1} {'tuned' if tuned else 'glibc default'}: {runs[tuned][-1]}", flush=True)
    rows = []
    for key in ("recon_s_per_step", "bns_s_per_iteration", "recon_minor_faults", "bns_minor_faults"):
        default, tuned = [r[key] for r in runs[False]], [r[key] for r in runs[True]]
        rows.append({"figure": key, "glibc_default": statistics.median(default), "tuned": statistics.median(tuned),
                     "median_pair_ratio": round(statistics.median(a / b for a, b in zip(default, tuned) if b), 2),
                     "load_average": os.getloadavg()})
    output = Path(args.output)
    path = write_results(output.stem, torch.device("cpu"), vars(args), rows, out_dir=output.parent)
    print(format_table(rows, ["figure", "glibc_default", "tuned", "median_pair_ratio"]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
