#!/usr/bin/env python
"""Seconds of calibration (activation observers, then weight observers), per model, config and observer.

    python benchmarks/bench_calibration.py                                  # CPU: the zoo models, W4A8
    python benchmarks/bench_calibration.py --observers MinMaxObserver MSEObserver MSEFastObserver
    python benchmarks/bench_calibration.py --models random:ViT-B/32 random:RN50   # on a GPU

Each row wraps a fresh model with the config (both observers replaced by the one named) and runs
:func:`d4c.quantization.calibration.calibrate` on 32 Gaussian-noise images and 32 texts (what
calibration uses: one forward of the first 32 of each), timing the activation pass and the weight
pass separately. Prints a table and writes JSON (device, torch, threads, settings) to
``benchmarks/results/calibration.json``.
"""

from __future__ import annotations

import argparse
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
from d4c.quantization.modules import ACTIVATION, WEIGHT  # noqa: E402
from d4c.quantization.qconfig import load_qconfig  # noqa: E402
from d4c.quantization.quant_clip import quantize_clip, quantized_layers, set_quant_state  # noqa: E402
from d4c.runtime import resolve_device  # noqa: E402

import clip  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def time_row(name: str, config: str, observer: str, args: argparse.Namespace, device: torch.device) -> dict:
    """Seconds of the activation and weight observer passes for one model/config/observer."""
    base = load_qconfig(config)
    qconfig = dataclasses.replace(base, a_qconfig=dataclasses.replace(base.a_qconfig, observer=observer),
                                  w_qconfig=dataclasses.replace(base.w_qconfig, observer=observer))
    loaded = load_clip(name, device)
    model = quantize_clip(loaded.model, qconfig)
    res = loaded.resolution
    images = torch.randn(args.samples, 3, res, res, generator=torch.Generator().manual_seed(0)).to(device)
    tokens = clip.tokenize([f"a photo of thing number {i}." for i in range(args.samples)]).to(device)
    set_quant_state(model, observe=True, quantize=False, role=ACTIVATION)
    _sync(device)
    start = time.perf_counter()
    model.encode_image(images)
    model.encode_text(tokens)
    _sync(device)
    activations = time.perf_counter() - start
    set_quant_state(model, observe=False, quantize=False)
    start = time.perf_counter()
    for _, layer in quantized_layers(model):
        layer.weight_quantizer.observe(layer.weight)
    _sync(device)
    weights = time.perf_counter() - start
    set_quant_state(model, observe=False, quantize=True, role=WEIGHT)
    return {"model": name, "config": Path(config).stem, "observer": observer,
            "activation_seconds": round(activations, 3), "weight_seconds": round(weights, 3),
            "total_seconds": round(activations + weights, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny-vit", "tiny-rn"])
    parser.add_argument("--configs", nargs="+", default=["./exp/config48.yaml"])
    parser.add_argument("--observers", nargs="+", default=["MinMaxObserver"])
    parser.add_argument("--samples", type=int, default=32, help="images and texts of the activation pass")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--output", default="benchmarks/results/calibration.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rows = []
    print(f"{'model':18} {'config':9} {'observer':20} {'activations':>12} {'weights':>9} {'total':>9}")
    for name in args.models:
        for config in args.configs:
            for observer in args.observers:
                r = time_row(name, config, observer, args, device)
                rows.append(r)
                print(f"{r['model']:18} {r['config']:9} {r['observer']:20} {r['activation_seconds']:12.3f} "
                      f"{r['weight_seconds']:9.3f} {r['total_seconds']:9.3f}", flush=True)
    write_json(args.output, {
        "benchmark": "calibration seconds (activation observers on one forward, then weight observers)",
        "device": {"type": device.type, "name": torch.cuda.get_device_name(device) if device.type == "cuda"
                   else platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads()},
        "torch": torch.__version__, "python": platform.python_version(),
        "settings": {"samples": args.samples, "configs": args.configs, "observers": args.observers},
        "note": "taken on a shared 2-core machine unless stated otherwise: rerun on a quiet machine for final figures",
        "rows": rows,
    })
    print(f"-> {args.output}")


if __name__ == "__main__":
    main()
