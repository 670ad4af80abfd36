#!/usr/bin/env python
"""Seconds per reconstruction step, per unit kind, on the small random benchmark models.

    python benchmarks/bench_reconstruction.py                 # CPU: random:small-vit, random:small-rn
    python benchmarks/bench_reconstruction.py --full          # also random:ViT-B/32, random:RN50 (GPU)

For each model the first block of the image encoder is cached exactly as ``--recon`` caches it
(128 Gaussian-noise images, W4A8 = exp/config48.yaml with min-max observers: the observer does not
change the cost of a step), then every unit of that block is reconstructed for ``--warmup`` +
``--iters`` steps through the real engine (:func:`d4c.reconstruction.reconstruct_unit`) and the
mean time of the timed steps is reported (each model in its own process): ViT units are q_proj,
k_proj, v_proj, the attention core with the out projection, c_fc, c_proj; the ResNet unit is the
first Bottleneck. Prints a table and writes ``benchmarks/results/reconstruction.json``
(environment, settings with the reference figures, records).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time

import torch

from common import format_table, peak_memory_mb, run_isolated, synchronize, write_results

import clip
from d4c.generation.engine import initial_images
from d4c.models.loading import load_clip
from d4c.quantization.calibration import calibrate
from d4c.quantization.modules import QuantConv2d, QuantLinear
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
GPU_MODELS = ("random:ViT-B/32", "random:RN50")


def _qconfig(path: str, iters: int):
    base = load_qconfig(path, recon_iters=iters)
    return dataclasses.replace(base, a_qconfig=dataclasses.replace(base.a_qconfig, observer="MinMaxObserver"),
                               w_qconfig=dataclasses.replace(base.w_qconfig, observer="MinMaxObserver"))


def bench_model(name: str, args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Time every unit of the first image-encoder block of model ``name`` (own process)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_clip(name, device)
    model = loaded.model
    qconfig = _qconfig(args.q_config, args.warmup + args.iters)
    recon = qconfig.recon
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
    rows = []
    for unit in block.units:
        inputs, kwargs = capture_inputs(lambda d: q_block(d.movedim(0, block.batch_axis)), x_q,
                                        model.get_submodule(unit.name), unit.batch_axis, device, device)
        target = capture_output(lambda d: fp_block(d.movedim(0, block.batch_axis)), x_fp,
                                fp_model.get_submodule(unit.name), unit.batch_axis, device, device)
        module = model.get_submodule(unit.name)
        marks: list[float] = []

        def mark(_module, _args, _out):
            if torch.is_grad_enabled():
                synchronize(device)
                marks.append(time.perf_counter())

        # one quantized layer runs once per step (the unit module itself may be bypassed, see UnitForward)
        layer = next(m for m in module.modules() if isinstance(m, (QuantConv2d, QuantLinear)))
        handle = layer.register_forward_hook(mark)
        generator = torch.Generator(device=device).manual_seed(0)
        reconstruct_unit(module, inputs, kwargs, target, unit, recon, recon.visual_batch_size,
                         recon.visual_scale_lr, device, generator, progress=False)
        handle.remove()
        timed = marks[args.warmup:]
        per_iter = (timed[-1] - timed[0]) / (len(timed) - 1)
        kind = "linear" if ".transformer." in unit.name or ".attnpool." in unit.name else "bottleneck"
        short = unit.name.split(".", 4)[-1] if kind == "linear" else unit.name
        reference = REFERENCE_CPU.get((name, kind)) if device.type == "cpu" else None
        rows.append({"model": name, "unit": short, "kind": kind, "s_per_iter": round(per_iter, 5),
                     "reference_s_per_iter": reference,
                     "speedup": round(reference / per_iter, 2) if reference else None, **peak_memory_mb(device)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--models", nargs="*", default=None, help="models to time (default: the small random ones)")
    parser.add_argument("--full", action="store_true", help="add full-size random ViT-B/32 and RN50 (for a GPU)")
    parser.add_argument("--q_config", default="./exp/config48.yaml")
    parser.add_argument("--num_images", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="fewer timed steps (10)")
    args = parser.parse_args()
    if args.quick:
        args.warmup, args.iters = 2, 10
    device = resolve_device(args.device)
    models = args.models or list(CPU_MODELS) + (list(GPU_MODELS) if args.full else [])
    records = [row for name in models for row in run_isolated(bench_model, name, args, device)]
    if args.threads:
        torch.set_num_threads(args.threads)  # so the recorded environment shows the threads used
    settings = {**vars(args), "observers": "MinMaxObserver",
                "batch_size": load_qconfig(args.q_config).recon.visual_batch_size,
                "reference_cpu_s_per_iter": {f"{m} {k}": v for (m, k), v in REFERENCE_CPU.items()},
                "target_speedup": TARGET_SPEEDUP}
    path = write_results("reconstruction", device, settings, records)
    print(format_table(records, ["model", "unit", "kind", "s_per_iter", "reference_s_per_iter", "speedup"]))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
