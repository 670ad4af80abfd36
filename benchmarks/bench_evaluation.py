#!/usr/bin/env python
"""Zero-shot evaluation speed: images per second, end to end and for the image encoder alone.

    python benchmarks/bench_evaluation.py            # zoo + small random models on this device
    python benchmarks/bench_evaluation.py --full     # also full-size random RN50, ViT-B/32, ViT-B/16 (GPU)

Every model is evaluated on the digits test split (539 images, upsampled by the model's own
preprocessing), so the same images flow through every architecture. ``end_to_end`` is
``d4c.evaluation.evaluate_zeroshot`` (text classifier + data loading + image pass);
``encoder`` times ``encode_image`` + logits on pre-loaded batches (no data loading).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from common import (CPU_MODELS, GPU_MODELS, format_table, peak_memory_mb, reset_peak_memory, run_isolated, timed,
                    write_results)

from d4c.data.digits import DigitsDataset
from d4c.evaluation import evaluate_zeroshot
from d4c.models.loading import load_clip
from d4c.runtime import resolve_device


def bench_model(name: str, device: torch.device, batch_size: int, amp: bool) -> dict:
    """Time one model (run in its own process so the peak-memory figures are its own)."""
    reset_peak_memory(device)
    loaded = load_clip(name, device)
    dataset = DigitsDataset("test", loaded.preprocess)
    n = len(dataset)

    start = time.perf_counter()
    metrics = evaluate_zeroshot(loaded.model, dataset, device, batch_size=batch_size, num_workers=0, amp=amp)
    end_to_end = time.perf_counter() - start

    images = torch.stack([dataset[i][0] for i in range(n)]).to(device)
    classifier = F.normalize(torch.randn(loaded.model.text_projection.shape[1], 10, device=device), dim=0)
    autocast = torch.autocast(device.type, enabled=amp and device.type == "cuda")

    def encode_all():
        with torch.no_grad(), autocast:
            for i in range(0, n, batch_size):
                feats = F.normalize(loaded.model.encode_image(images[i:i + batch_size]), dim=-1)
                _ = 100.0 * feats @ classifier.to(feats.dtype)

    encoder = timed(encode_all, device, repeat=3, warmup=1)
    return {"model": name, "resolution": loaded.resolution, "images": n, "batch_size": batch_size,
            "end_to_end_s": round(end_to_end, 3), "end_to_end_img_per_s": round(n / end_to_end, 1),
            "encoder_s": round(encoder, 4), "encoder_img_per_s": round(n / encoder, 1),
            "acc1": round(metrics["acc1"], 4), **peak_memory_mb(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--models", nargs="*", default=None, help="models to time (default: the CPU set)")
    parser.add_argument("--full", action="store_true", help="add the full-size random models (for a GPU)")
    parser.add_argument("--batch_size", type=int, default=64, help="evaluation batch size")
    parser.add_argument("--no_amp", action="store_true", help="no autocast on CUDA")
    parser.add_argument("--quick", action="store_true", help="accepted for run.py; this benchmark is already short")
    args = parser.parse_args()
    device = resolve_device(args.device)
    models = args.models or list(CPU_MODELS) + (list(GPU_MODELS) if args.full else [])
    records = []
    for name in models:
        records.append(run_isolated(bench_model, name, device, args.batch_size, not args.no_amp))
        print(f"{name}: {records[-1]['encoder_img_per_s']} img/s (encoder), "
              f"{records[-1]['end_to_end_img_per_s']} img/s (end to end)", flush=True)
    path = write_results("evaluation", device, vars(args), records)
    print(format_table(records, ["model", "resolution", "images", "end_to_end_img_per_s", "encoder_img_per_s",
                                 "acc1", "peak_rss_mb"]))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
