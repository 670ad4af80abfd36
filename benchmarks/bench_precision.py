#!/usr/bin/env python
"""TF32 and bf16 against float32: stage seconds and the zoo's accuracy after a short D4C W4A8 run.

    python benchmarks/bench_precision.py --device cuda          # fp32, tf32, bf16 on tiny-vit and tiny-rn
    python benchmarks/bench_precision.py --cpu                  # fp32 and bf16 on tiny-rn, tiny counts (CI)

Each variant runs the whole command line in this process (``--dfq --gen_img --d4c_config 3 --recon``,
``exp/config48.yaml``, the digits prompts; empty pseudo-image cache) inside one precision setting:

* ``fp32``: the project's default (float32 everywhere, TF32 off);
* ``tf32`` (CUDA only): ``torch.backends.cuda.matmul.allow_tf32`` and ``cudnn.allow_tf32`` on;
* ``bf16``: ``torch.autocast(dtype=torch.bfloat16)`` around the run (matrix products and
  convolutions of generation, calibration, reconstruction and evaluation in bfloat16; fake
  quantization, losses and the optimisers' state stay float32).

The zoo's top-1 on the digits test split shows the accuracy effect (CPU bf16 is enough for that);
the stage seconds show the speed effect on the device it ran on. Writes
``benchmarks/results/precision.json`` and a table. The project uses float32 everywhere: neither
variant is offered by the command line until this table, run on a GPU, shows one that pays.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path

import torch

from common import RESULTS_DIR, format_table, write_results

from d4c.cli import main as cli_main
from d4c.runtime import resolve_device


@contextlib.contextmanager
def precision(variant: str, device: torch.device):
    """The numeric setting of one variant, restored afterwards."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        if variant == "tf32":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        if variant == "bf16":
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def run(model: str, variant: str, args: argparse.Namespace, device: torch.device) -> dict:
    with tempfile.TemporaryDirectory() as workdir:
        output = Path(workdir) / "result.json"
        flags = ["--model", model, "--dataset", "digits", "--num_workers", "0", "--q_config", "exp/config48.yaml",
                 "--custom_file", "d4c/template/digits_classnames_templates.json", "--dfq", "--gen_img",
                 "--d4c_config", "3", "--gen_iter", str(args.gen_iter), "--recon", "--recon_iters",
                 str(args.recon_iters), "--gen_cache_dir", str(Path(workdir) / "cache"), "--gen_ckpt_every", "0",
                 "--seed", "0", "--device", device.type, "--compile", "off", "--output", str(output)]
        with precision(variant, device):
            status = cli_main(flags)
        if status != 0:
            raise SystemExit(f"bench_precision.py: the {variant} run of {model} failed (exit {status}).")
        record = json.loads(output.read_text())
    return {"model": model, "variant": variant, "acc1": record["metrics"]["acc1"],
            **{f"{k}_s": record["timings_s"].get(k) for k in ("generation", "calibration", "reconstruction",
                                                              "evaluation")},
            "peak_memory_mb": record.get("peak_memory_mb")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cpu", action="store_true", help="tiny counts on the CPU (fp32, bf16; tiny-rn)")
    parser.add_argument("--models", nargs="+", default=None, help="default: tiny-vit tiny-rn (--cpu: tiny-rn)")
    parser.add_argument("--variants", nargs="+", default=None, choices=["fp32", "tf32", "bf16"])
    parser.add_argument("--gen_iter", type=int, default=None, help="default 50 (--cpu: 2)")
    parser.add_argument("--recon_iters", type=int, default=None, help="default 100 (--cpu: 2)")
    parser.add_argument("--output", default=str(RESULTS_DIR / "precision.json"))
    args = parser.parse_args(argv)
    device = torch.device("cpu") if args.cpu else resolve_device(args.device)
    args.models = args.models or (["tiny-rn"] if args.cpu else ["tiny-vit", "tiny-rn"])
    args.variants = args.variants or (["fp32", "tf32", "bf16"] if device.type == "cuda" else ["fp32", "bf16"])
    args.gen_iter = args.gen_iter or (2 if args.cpu else 50)
    args.recon_iters = args.recon_iters or (2 if args.cpu else 100)
    rows = []
    for model in args.models:
        for variant in args.variants:
            if variant == "tf32" and device.type != "cuda":
                continue
            rows.append(run(model, variant, args, device))
            fp32 = next((r for r in rows if r["model"] == model and r["variant"] == "fp32"), None)
            rows[-1]["acc1_change"] = None if fp32 is None else round(rows[-1]["acc1"] - fp32["acc1"], 4)
    output = Path(args.output)
    path = write_results(output.stem, device, vars(args), rows, out_dir=output.parent)
    print(format_table(rows, ["model", "variant", "acc1", "acc1_change", "generation_s", "calibration_s",
                              "reconstruction_s", "evaluation_s"]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
