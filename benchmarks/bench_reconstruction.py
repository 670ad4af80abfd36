#!/usr/bin/env python
"""Seconds per reconstruction step, per unit kind, eager and compiled, with the step's share of the machine.

    python benchmarks/bench_reconstruction.py                 # CPU: random:small-vit, random:small-rn
    python benchmarks/bench_reconstruction.py --full          # also random:ViT-B/32, random:RN50 (GPU)
    python benchmarks/bench_reconstruction.py --no_compile    # eager steps only

For each model the first block of the image encoder is cached exactly as ``--recon`` caches it
(128 Gaussian-noise images, W4A8 = exp/config48.yaml with min-max observers: the observer does not
change the cost of a step), then every unit of that block is reconstructed through the real engine
(:func:`d4c.reconstruction.reconstruct_unit`), each model in its own process:

* ``eager_s``: the mean step of ``--iters`` steps after ``--warmup`` steps (``--compile off``);
* ``compiled_s`` and ``compile_s``: the same with ``--compile on`` (a first run compiles: its extra
  seconds over ``--warmup`` compiled steps are the compile time, from an empty inductor cache);
* ``gflop``: floating-point operations of the step's matrix products / convolutions, forward and
  backward (torch's flop counter), and ``machine_fraction``: how much of this machine's float32
  matrix-product rate (``matmul_gflops``, measured in the same process) the step reaches.

Every step includes AdaRound's rounding term (``warm_up: 0``), as 80 % of a real run's steps do.
ViT units are q_proj, k_proj, v_proj, the out projection, c_fc, c_proj; the ResNet unit is the
first Bottleneck. Prints a table and writes ``benchmarks/results/reconstruction.json``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import tempfile
from pathlib import Path

import torch

from common import RESULTS_DIR, format_table, matmul_gflops, peak_memory_mb, run_isolated, step_flops, write_results

import clip
from d4c.generation.engine import initial_images
from d4c.models.loading import load_clip
from d4c.quantization.calibration import calibrate
from d4c.quantization.qconfig import load_qconfig
from d4c.quantization.quant_clip import disable_quantization, quantize_clip
from d4c.reconstruction.cache import capture_inputs, capture_output
from d4c.reconstruction.engine import reconstruct_unit
from d4c.reconstruction.units import encoder_plans
from d4c.runtime import resolve_device

# The reference implementation on this 2-core CPU, small random models, batch 32 (s/iter).
REFERENCE_CPU = {("random:small-vit", "linear"): 0.0089, ("random:small-rn", "bottleneck"): 0.53}
TARGET_SPEEDUP = 1.5
CPU_MODELS = ("random:small-vit", "random:small-rn")
GPU_MODELS = ("random:RN50", "random:ViT-B/32", "random:ViT-B/16")


def _qconfig(path: str):
    base = load_qconfig(path)
    return dataclasses.replace(base, a_qconfig=dataclasses.replace(base.a_qconfig, observer="MinMaxObserver"),
                               w_qconfig=dataclasses.replace(base.w_qconfig, observer="MinMaxObserver"),
                               recon=dataclasses.replace(base.recon, warm_up=0.0))


def unit_kind(name: str) -> str:
    """``qkv`` (q/k/v projections), ``out_proj`` (after the attention), ``mlp``, or ``bottleneck``."""
    if name.endswith(("q_proj", "k_proj", "v_proj")):
        return "qkv"
    if name.endswith(("out_proj", "core", "c_proj")) and ".mlp." not in name:
        return "out_proj"
    return "mlp" if ".mlp." in name else "bottleneck"


def _cached_units(name: str, args: argparse.Namespace, device: torch.device):
    loaded = load_clip(name, device)
    model = loaded.model
    qconfig = _qconfig(args.q_config)
    res = loaded.resolution
    images = initial_images(args.num_images, res, seed=0)[0].to(device)  # the Gaussian-noise row's images
    tokens = clip.tokenize(["a photo of a thing."] * 32).to(device)
    quantize_clip(model, qconfig)
    calibrate(model, images, tokens, progress=False)
    fp_model = copy.deepcopy(model)
    disable_quantization(fp_model)
    for m in (model, fp_model):
        for p in m.parameters():
            p.requires_grad_(False)
    plan = encoder_plans(model)[0]
    block = plan.blocks[0]
    x_q = capture_inputs(lambda d: plan.run(model, d), images, model.get_submodule(block.name), block.batch_axis,
                         device, device)[0][0]
    x_fp = capture_inputs(lambda d: plan.run(fp_model, d), images, fp_model.get_submodule(block.name),
                          block.batch_axis, device, device)[0][0]
    q_block, fp_block = model.get_submodule(block.name), fp_model.get_submodule(block.name)
    for unit in block.units:
        inputs, kwargs = capture_inputs(lambda d: q_block(d.movedim(0, block.batch_axis)), x_q,
                                        model.get_submodule(unit.name), unit.batch_axis, device, device)
        target = capture_output(lambda d: fp_block(d.movedim(0, block.batch_axis)), x_fp,
                                fp_model.get_submodule(unit.name), unit.batch_axis, device, device)
        yield model.get_submodule(unit.name), unit, inputs, kwargs, target, qconfig.recon


def bench_model(name: str, args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Time every unit of the first image-encoder block of model ``name`` (own process)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    gemm = matmul_gflops(device)
    rows = []
    for module, unit, inputs, kwargs, target, recon in _cached_units(name, args, device):
        saved = copy.deepcopy(module.state_dict())

        def run(iters: int, compile: bool):
            module.load_state_dict(saved)  # hardening wrote the rounding into the weight
            generator = torch.Generator(device=device).manual_seed(0)
            config = dataclasses.replace(recon, iters=iters)
            return reconstruct_unit(module, inputs, kwargs, target, unit, config, recon.visual_batch_size,
                                    recon.visual_scale_lr, device, generator, progress=False, compile=compile)

        run(args.warmup, False)
        eager = run(args.iters, False).seconds_per_iter
        flops = (step_flops(lambda: run(2, False)) - step_flops(lambda: run(1, False)))
        row = {"model": name, "unit": unit.name.split(".", 4)[-1] if "transformer" in unit.name else unit.name,
               "kind": unit_kind(unit.name), "eager_s": round(eager, 5), "gflop": round(flops / 1e9, 3),
               "machine_gflops": gemm, "eager_machine_fraction": round(flops / eager / 1e9 / gemm, 3)}
        if not args.no_compile and (args.compile_models is None or name in args.compile_models):
            first = run(args.warmup, True)
            compiled = run(args.iters, True).seconds_per_iter
            row.update({"compiled_s": round(compiled, 5),
                        "compile_s": round(max(first.seconds_per_iter - compiled, 0.0) * args.warmup, 1),
                        "compiled_machine_fraction": round(flops / compiled / 1e9 / gemm, 3)})
        reference = REFERENCE_CPU.get((name, "linear" if row["kind"] != "bottleneck" else "bottleneck"))
        if device.type == "cpu" and reference and row["kind"] in ("qkv", "bottleneck"):
            row["reference_s"] = reference
        rows.append({**row, **peak_memory_mb(device)})
        print(format_table([row], list(row)).splitlines()[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--models", nargs="*", default=None, help="models to time (default: the small random ones)")
    parser.add_argument("--full", action="store_true", help="add full-size random ViT-B/32 and RN50 (for a GPU)")
    parser.add_argument("--q_config", default="./exp/config48.yaml")
    parser.add_argument("--num_images", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="fewer timed steps (10)")
    parser.add_argument("--no_compile", action="store_true", help="eager steps only")
    parser.add_argument("--compile_models", nargs="*", default=None, help="time compiled steps of these models only")
    parser.add_argument("--output", default=None, help="JSON path (default: benchmarks/results/reconstruction.json)")
    args = parser.parse_args()
    if args.quick:
        args.warmup, args.iters = 2, 10
    device = resolve_device(args.device)
    models = args.models or list(CPU_MODELS) + (list(GPU_MODELS) if args.full else [])
    with tempfile.TemporaryDirectory() as cache:  # compile times from an empty inductor cache
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        records = [row for name in models for row in run_isolated(bench_model, name, args, device)]
    if args.threads:
        torch.set_num_threads(args.threads)  # so the recorded environment shows the threads used
    settings = {**vars(args), "observers": "MinMaxObserver", "warm_up": 0.0,
                "batch_size": load_qconfig(args.q_config).recon.visual_batch_size,
                "reference_cpu_s_per_iter": {f"{m} {k}": v for (m, k), v in REFERENCE_CPU.items()},
                "target_speedup": TARGET_SPEEDUP}
    output = Path(args.output) if args.output else RESULTS_DIR / "reconstruction.json"
    path = write_results(output.stem, device, settings, records, out_dir=output.parent)
    columns = ["model", "unit", "kind", "eager_s", "compiled_s", "compile_s", "gflop", "eager_machine_fraction",
               "compiled_machine_fraction", "reference_s"]
    print(format_table(records, columns))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
