#!/usr/bin/env python
"""Zero-shot evaluation speed: images per second, end to end and for the image encoder alone.

    python benchmarks/bench_evaluation.py            # zoo + small random models on this device
    python benchmarks/bench_evaluation.py --full     # also full-size random RN50, ViT-B/32, ViT-B/16 (GPU)
    python benchmarks/bench_evaluation.py --zeroshot --compare main      # text and image sides, FP and quantized,
                                                                          # paired with the code of main
    python benchmarks/bench_evaluation.py --zeroshot --imagenet --compare main  # + the full ImageNet classifier

``--zeroshot`` times the two sides of a zero-shot evaluation separately, full precision and
quantized (W4A8, min/max-calibrated on noise: the observer does not change the speed), each row
in its own process: the text side is the classifier of the first ``--classes`` ImageNet-1k classes
x its 80 templates (prompts per second), the image side ``encode_image`` + logits over the digits
test split (images per second). ``--imagenet`` adds the whole 1000 x 80 = 80,000-prompt ImageNet
classifier of tiny-vit. ``--compare REV`` runs every row with the code of git revision ``REV`` too
(alternating, same machine and load). Writes ``benchmarks/results/evaluation_zeroshot.json``.

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


ZEROSHOT_MODELS = ("tiny-vit", "random:small-vit", "random:small-rn")


def _zeroshot_model(name: str, quantized: bool):
    import clip
    import dataclasses

    from d4c.quantization.calibration import calibrate
    from d4c.quantization.qconfig import load_qconfig
    from d4c.quantization.quant_clip import quantize_clip

    loaded = load_clip(name, "cpu")
    if quantized:
        base = load_qconfig("./exp/config48.yaml")
        qconfig = dataclasses.replace(
            base, a_qconfig=dataclasses.replace(base.a_qconfig, observer="MinMaxObserver"),
            w_qconfig=dataclasses.replace(base.w_qconfig, observer="MinMaxObserver"))
        quantize_clip(loaded.model, qconfig)
        res = loaded.resolution
        calibrate(loaded.model, torch.randn(8, 3, res, res, generator=torch.Generator().manual_seed(0)),
                  clip.tokenize([f"a photo of thing number {i}." for i in range(8)]), progress=False)
    return loaded


def zeroshot_row(row: dict) -> dict:
    """One side (text or image) of one model, FP or quantized, with whichever d4c is first on sys.path."""
    import json
    from contextlib import nullcontext
    from functools import partial
    from pathlib import Path

    import clip
    import d4c
    from clip_benchmark.datasets import builder
    from clip_benchmark.metrics import zeroshot_classification

    from common import load_average

    try:  # the code with the batched classifier and the precomputed weights
        from d4c.evaluation.classifier import zeroshot_classifier
        from d4c.quantization.frozen import precomputed_weights
    except ImportError:
        zeroshot_classifier = precomputed_weights = None
    loaded = _zeroshot_model(row["model"], row["quantized"])
    model = loaded.model.eval()
    out = {**row, "code": str(Path(d4c.__file__).resolve().parents[1]), "torch_threads": torch.get_num_threads(),
           "load_before": load_average()}
    frozen = precomputed_weights(model) if precomputed_weights else nullcontext()
    with torch.no_grad(), frozen:
        if row["side"] == "text":
            folder = Path(builder.__file__).parent
            templates = json.loads((folder / "en_zeroshot_classification_templates.json").read_text())["imagenet1k"]
            classes = json.loads((folder / "en_classnames.json").read_text())["imagenet1k"][:row["classes"]]
            start = time.perf_counter()
            if zeroshot_classifier is not None:
                zeroshot_classifier(model, classes, templates, "cpu", context_length=model.context_length)
            else:
                tokenizer = partial(clip.tokenize, context_length=model.context_length, truncate=True)
                zeroshot_classification.zero_shot_classifier(model, tokenizer, classes, templates, "cpu", amp=False)
            seconds = time.perf_counter() - start
            out.update(prompts=len(classes) * len(templates), seconds=round(seconds, 2),
                       prompts_per_s=round(len(classes) * len(templates) / seconds, 1))
        else:
            dataset = DigitsDataset("test", loaded.preprocess)
            images = torch.stack([dataset[i][0] for i in range(len(dataset))])
            classifier = F.normalize(torch.randn(model.text_projection.shape[1], 10), dim=0)

            def encode_all():
                for i in range(0, len(images), 64):
                    _ = 100.0 * F.normalize(model.encode_image(images[i:i + 64]), dim=-1) @ classifier

            seconds = timed(encode_all, torch.device("cpu"), repeat=3, warmup=1)
            out.update(images=len(images), seconds=round(seconds, 3), images_per_s=round(len(images) / seconds, 1))
    out["load_after"] = load_average()
    return out


def zeroshot_main(args) -> None:
    """Paired (``--compare``) text- and image-side rows; writes ``evaluation_zeroshot.json``."""
    from pathlib import Path

    from common import export_revision, run_row

    script = Path(__file__).resolve()
    before = export_revision(args.compare) if args.compare else None
    after = export_revision(args.after) if args.after else (None, "working tree")
    rows = [{"model": m, "quantized": q, "side": side, "classes": args.classes}
            for m in (args.models or ZEROSHOT_MODELS) for q in (False, True) for side in ("text", "image")]
    if args.imagenet:
        rows += [{"model": "tiny-vit", "quantized": q, "side": "text", "classes": 1000} for q in (False, True)]
    records = []
    for number, row in enumerate(rows):
        runs = ([("before", before[0])] if before else []) + [("after", after[0])]
        for label, code in (runs[::-1] if number % 2 else runs):
            record = run_row(script, row, code)
            record.update(label=label, revision=before[1] if label == "before" else after[1])
            records.append(record)
            rate = record.get("prompts_per_s") or record.get("images_per_s")
            print(f"{row['model']} {'W4A8' if row['quantized'] else 'FP'} {row['side']} ({row['classes']} classes) "
                  f"{label}: {record['seconds']} s, {rate}/s (load {record['load_before'][0]})", flush=True)
    summary = []
    for row in rows:
        got = {r["label"]: r for r in records if all(r[k] == row[k] for k in row)}
        if "before" in got and "after" in got:
            summary.append({**row, "before_s": got["before"]["seconds"], "after_s": got["after"]["seconds"],
                            "speedup": round(got["before"]["seconds"] / got["after"]["seconds"], 1)})
    path = write_results("evaluation_zeroshot", torch.device("cpu"), {**vars(args), "summary": summary}, records)
    if summary:
        print(format_table(summary, list(summary[0])))
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--models", nargs="*", default=None, help="models to time (default: the CPU set)")
    parser.add_argument("--full", action="store_true", help="add the full-size random models (for a GPU)")
    parser.add_argument("--batch_size", type=int, default=64, help="evaluation batch size")
    parser.add_argument("--no_amp", action="store_true", help="no autocast on CUDA")
    parser.add_argument("--quick", action="store_true", help="accepted for run.py; this benchmark is already short")
    parser.add_argument("--zeroshot", action="store_true", help="text and image sides, FP and quantized (see above)")
    parser.add_argument("--classes", type=int, default=20, help="--zeroshot: ImageNet classes of the text rows")
    parser.add_argument("--imagenet", action="store_true", help="--zeroshot: add tiny-vit's whole ImageNet classifier")
    parser.add_argument("--compare", default=None, metavar="REV", help="--zeroshot: pair every row with revision REV")
    parser.add_argument("--after", default=None, metavar="REV",
                        help="--zeroshot: git revision of the 'after' rows (default: the working tree)")
    parser.add_argument("--_row", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._row:
        import json

        print(json.dumps(zeroshot_row(json.loads(args._row))))
        return
    if args.zeroshot:
        zeroshot_main(args)
        return
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
