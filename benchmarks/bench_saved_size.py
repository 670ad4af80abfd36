#!/usr/bin/env python
"""Size of the saved quantized model (``<result>.quant.safetensors``) against the earlier float32 format.

    python benchmarks/bench_saved_size.py            # random full-size RN50 and ViT-B/32, W4A8 and W8A8

Each model is a randomly initialised full-size CLIP whose weights are rounded to float16, as
OpenAI's checkpoints are (the size depends on the shapes and on that, not on the values); it is
wrapped with the config (min/max observers: the observer does not change the size), calibrated on
8 noise images and 8 texts, and saved in both formats: the compact one (integer weights, 4-bit
packed two per byte, float16 where exact) and the earlier ``torch.save`` of the float32 state
dict. The round trip is checked: the restored fake-quantized weights equal the saved model's.
Writes ``benchmarks/results/saved_size.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import torch

from common import format_table, run_isolated, write_results

MODELS = ("RN50", "ViT-B/32")
CONFIGS = ("./exp/config48.yaml", "./exp/config88.yaml")


def size_row(name: str, config: str) -> dict:
    import clip

    from d4c.models.architectures import OPENAI_ARCHITECTURES
    from d4c.quantization.calibration import calibrate
    from d4c.quantization.qconfig import load_qconfig
    from d4c.quantization.quant_clip import quantize_clip, quantized_layers
    from d4c.quantization.state import STATE_FORMAT, load_quant_state, restore_quantized, save_quant_state

    torch.set_num_threads(1)
    arch = OPENAI_ARCHITECTURES[name]
    model = arch.build(seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    base = load_qconfig(config)
    qconfig = dataclasses.replace(base, a_qconfig=dataclasses.replace(base.a_qconfig, observer="MinMaxObserver"),
                                  w_qconfig=dataclasses.replace(base.w_qconfig, observer="MinMaxObserver"))
    quantize_clip(model, qconfig)
    r = arch.image_resolution
    calibrate(model, torch.randn(8, 3, r, r), clip.tokenize([f"a photo of {i}" for i in range(8)]), progress=False)
    with tempfile.TemporaryDirectory() as folder:
        compact, legacy = Path(folder) / "m.quant.safetensors", Path(folder) / "m.quant.pt"
        save_quant_state(compact, model, qconfig, name)
        torch.save({"format": STATE_FORMAT, "model": name, "q_config": qconfig.as_dict(), "info": {},
                    "state_dict": {k: v.detach() for k, v in model.state_dict().items()}}, legacy)
        restored, _ = restore_quantized(arch.build(seed=1), load_quant_state(compact))
        with torch.no_grad():
            exact = all(torch.equal(a.weight_quantizer(a.weight), b.weight_quantizer(b.weight))
                        for (_, a), (_, b) in zip(quantized_layers(model), quantized_layers(restored)))
        return {"model": name, "config": Path(config).stem, "w_bit": qconfig.w_qconfig.bit,
                "compact_mb": round(compact.stat().st_size / 2**20, 1), "float32_mb": round(legacy.stat().st_size / 2**20, 1),
                "ratio": round(legacy.stat().st_size / compact.stat().st_size, 2), "bit_exact": exact}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
    args = parser.parse_args()
    records = [run_isolated(size_row, m, c) for m in args.models for c in args.configs]
    path = write_results("saved_size", torch.device("cpu"), vars(args), records)
    print(format_table(records, ["model", "config", "w_bit", "compact_mb", "float32_mb", "ratio", "bit_exact"]))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
