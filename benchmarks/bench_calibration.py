#!/usr/bin/env python
"""Seconds of calibration (activation observers, then weight observers), per model, config and observer.

    python benchmarks/bench_calibration.py                  # CPU: zoo + small random models, W4A8
    python benchmarks/bench_calibration.py --quick          # the two zoo models
    python benchmarks/bench_calibration.py --full           # also full-size random RN50, ViT-B/32, ViT-B/16 (GPU)

Each row (its own process, so peak memory is its own) wraps a fresh model with the config, both
observers replaced by the one named (MinMax, MSE = the exact search, MSEFast = golden section),
and times what :func:`d4c.quantization.calibration.calibrate` does: the activation observers on
one forward of 32 Gaussian-noise images and 32 texts, then the weight observers. Prints a table and
writes ``benchmarks/results/calibration.json`` (environment, settings, records).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from common import CPU_MODELS, GPU_MODELS, format_table, peak_memory_mb, run_isolated, synchronize, write_results

import clip
from d4c.generation.engine import initial_images
from d4c.models.loading import load_clip
from d4c.quantization.modules import ACTIVATION, WEIGHT
from d4c.quantization.qconfig import load_qconfig
from d4c.quantization.quant_clip import quantize_clip, quantized_layers, set_quant_state
from d4c.runtime import resolve_device

OBSERVERS = ("MinMaxObserver", "MSEObserver", "MSEFastObserver")


@torch.no_grad()
def time_row(name: str, config: str, observer: str, samples: int, device: torch.device, threads: int | None) -> dict:
    """Seconds of the activation and weight observer passes for one model/config/observer (own process)."""
    if threads:
        torch.set_num_threads(threads)
    base = load_qconfig(config)
    qconfig = dataclasses.replace(base, a_qconfig=dataclasses.replace(base.a_qconfig, observer=observer),
                                  w_qconfig=dataclasses.replace(base.w_qconfig, observer=observer))
    loaded = load_clip(name, device)
    model = quantize_clip(loaded.model, qconfig)
    res = loaded.resolution
    images = initial_images(samples, res, seed=0)[0].to(device)  # the Gaussian-noise row's images
    tokens = clip.tokenize([f"a photo of thing number {i}." for i in range(samples)]).to(device)
    set_quant_state(model, observe=True, quantize=False, role=ACTIVATION)
    synchronize(device)
    start = time.perf_counter()
    model.encode_image(images)
    model.encode_text(tokens)
    synchronize(device)
    activations = time.perf_counter() - start
    set_quant_state(model, observe=False, quantize=False)
    start = time.perf_counter()
    for _, layer in quantized_layers(model):
        layer.weight_quantizer.observe(layer.weight)
    synchronize(device)
    weights = time.perf_counter() - start
    set_quant_state(model, observe=False, quantize=True, role=WEIGHT)
    return {"model": name, "config": Path(config).stem, "observer": observer,
            "quantizers": sum(1 for m in model.modules() if hasattr(m, "observer_enabled")),
            "activation_s": round(activations, 3), "weight_s": round(weights, 3),
            "total_s": round(activations + weights, 3), **peak_memory_mb(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--models", nargs="*", default=None, help="models to time (default: the CPU set)")
    parser.add_argument("--full", action="store_true", help="add the full-size random models (for a GPU)")
    parser.add_argument("--configs", nargs="+", default=["./exp/config48.yaml"])
    parser.add_argument("--observers", nargs="+", default=list(OBSERVERS))
    parser.add_argument("--samples", type=int, default=32, help="images and texts of the activation pass")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="the two zoo models only")
    args = parser.parse_args()
    device = resolve_device(args.device)
    models = args.models or (["tiny-vit", "tiny-rn"] if args.quick else
                             list(CPU_MODELS) + (list(GPU_MODELS) if args.full else []))
    records = []
    for name in models:
        for config in args.configs:
            for observer in args.observers:
                records.append(run_isolated(time_row, name, config, observer, args.samples, device, args.threads))
                r = records[-1]
                print(f"{name} {r['config']} {observer}: {r['total_s']} s", flush=True)
    if args.threads:
        torch.set_num_threads(args.threads)  # so the recorded environment shows the threads used
    path = write_results("calibration", device, vars(args), records)
    print(format_table(records, ["model", "config", "observer", "quantizers", "activation_s", "weight_s", "total_s"]))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
