#!/usr/bin/env python
"""Seconds per reconstruction step, per unit kind, on the small random benchmark models.

    python benchmarks/bench_reconstruction.py                       # CPU: random:small-vit, random:small-rn
    python benchmarks/bench_reconstruction.py --models random:ViT-B/32 random:RN50   # on a GPU

For each model the first block of the image encoder is cached exactly as ``--recon`` caches it
(128 Gaussian-noise images, W4A8 = exp/config48.yaml with min-max observers: the observer does not
change the cost of a step), then every unit of that block is reconstructed for ``--warmup`` +
``--iters`` steps through the real engine (:func:`d4c.reconstruction.reconstruct_unit`) and the
mean time of the timed steps is reported: ViT units are q_proj, k_proj, v_proj, the attention
core with the out projection, c_fc, c_proj; the ResNet unit is the first Bottleneck. Prints a
table and writes JSON (device, torch, threads, settings, the reference figures) to
``benchmarks/results/reconstruction.json``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import d4c  # noqa: E402,F401
from d4c.io import write_json  # noqa: E402
from d4c.models.loading import load_clip  # noqa: E402
from d4c.quantization.calibration import calibrate  # noqa: E402
from d4c.quantization.modules import QuantConv2d, QuantLinear  # noqa: E402
from d4c.quantization.qconfig import load_qconfig  # noqa: E402
from d4c.quantization.quant_clip import disable_quantization, quantize_clip  # noqa: E402
from d4c.reconstruction.cache import capture_inputs, capture_output  # noqa: E402
from d4c.reconstruction.engine import reconstruct_unit  # noqa: E402
from d4c.reconstruction.units import encoder_plans  # noqa: E402
from d4c.runtime import resolve_device  # noqa: E402

import clip  # noqa: E402

# The reference implementation on this 2-core CPU, small random models, batch 32 (s/iter).
REFERENCE_CPU = {("random:small-vit", "linear"): 0.0089, ("random:small-rn", "bottleneck"): 0.53}
TARGET_SPEEDUP = 1.5


def _qconfig(path: str):
    base = load_qconfig(path)
    observer = dataclasses.replace(base.a_qconfig, observer="MinMaxObserver")
    return dataclasses.replace(base, a_qconfig=observer,
                               w_qconfig=dataclasses.replace(base.w_qconfig, observer="MinMaxObserver"))


def bench_model(name: str, args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Time every unit of the first image-encoder block of model ``name``."""
    loaded = load_clip(name, device)
    model = loaded.model
    qconfig = _qconfig(args.q_config)
    recon = dataclasses.replace(qconfig.recon, iters=args.warmup + args.iters)
    generator = torch.Generator().manual_seed(0)
    res = loaded.resolution
    images = torch.randn(args.num_images, 3, res, res, generator=generator).to(device)
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
        marks: list[float] = []
        module = model.get_submodule(unit.name)

        def mark(_module, _args, _out):
            if torch.is_grad_enabled():
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                marks.append(time.perf_counter())

        # one quantized layer runs once per step (the unit module itself may be bypassed, see UnitForward)
        layer = next(m for m in module.modules() if isinstance(m, (QuantConv2d, QuantLinear)))
        handle = layer.register_forward_hook(mark)
        gen = torch.Generator(device=device).manual_seed(0)
        reconstruct_unit(module, inputs, kwargs, target, unit, recon, recon.visual_batch_size,
                         recon.visual_scale_lr, device, gen, progress=False)
        handle.remove()
        timed = marks[args.warmup:]
        per_iter = (timed[-1] - timed[0]) / (len(timed) - 1)
        kind = "bottleneck" if unit.name.count(".") == 2 and "layer" in unit.name else "linear"
        short = unit.name.split(".", 4)[-1] if kind == "linear" else unit.name
        reference = REFERENCE_CPU.get((name, kind)) if device.type == "cpu" else None
        rows.append({"model": name, "unit": short, "kind": kind, "seconds_per_iteration": round(per_iter, 5),
                     "reference_seconds_per_iteration": reference,
                     "speedup_vs_reference": round(reference / per_iter, 2) if reference else None})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["random:small-vit", "random:small-rn"])
    parser.add_argument("--q_config", default="./exp/config48.yaml")
    parser.add_argument("--num_images", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--output", default="benchmarks/results/reconstruction.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rows = [row for name in args.models for row in bench_model(name, args, device)]
    print(f"{'model':18} {'unit':22} {'s/iter':>9} {'reference':>10} {'speed-up':>9}")
    for r in rows:
        ref = f"{r['reference_seconds_per_iteration']:.4f}" if r["reference_seconds_per_iteration"] else "-"
        up = f"{r['speedup_vs_reference']:.2f}x" if r["speedup_vs_reference"] else "-"
        print(f"{r['model']:18} {r['unit']:22} {r['seconds_per_iteration']:9.4f} {ref:>10} {up:>9}")
    write_json(args.output, {
        "benchmark": "reconstruction seconds per step (first image-encoder block)",
        "device": {"type": device.type, "name": torch.cuda.get_device_name(device) if device.type == "cuda"
                   else platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads()},
        "torch": torch.__version__, "python": platform.python_version(),
        "settings": {"q_config": args.q_config, "observers": "MinMaxObserver", "num_images": args.num_images,
                     "batch_size": load_qconfig(args.q_config).recon.visual_batch_size, "warmup": args.warmup,
                     "iters": args.iters},
        "reference_cpu": {f"{m} {k}": v for (m, k), v in REFERENCE_CPU.items()},
        "target_speedup": TARGET_SPEEDUP,
        "note": "taken on a shared 2-core machine unless stated otherwise: rerun on a quiet machine for final figures",
        "rows": rows,
    })
    print(f"-> {args.output}")


if __name__ == "__main__":
    main()
