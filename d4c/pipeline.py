"""One run: load CLIP -> calibration data -> (pseudo images) -> quantize -> calibrate ->
(reconstruct) -> zero-shot evaluation -> result file.

Everything that can be checked without a model (flags, the result path, the dataset root) is
checked first, so a mistake costs seconds, not a model load.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from d4c.config import RunConfig
from d4c.data.datasets import build_dataset, check_dataset
from d4c.errors import NotAvailableYet
from d4c.evaluation import evaluate_zeroshot
from d4c.models.loading import load_clip
from d4c.results import StageTimer, build_record, output_path, write_result
from d4c.runtime import resolve_device, seed_everything


def _check_stages_available(config: RunConfig) -> None:
    """Stop with a clear sentence for flags whose stage is not part of this version."""
    if config.fp_model:
        ignored = [flag for flag, on in (("--recon", config.recon), ("--dfq", config.dfq)) if on]
        if ignored:
            warnings.warn(f"{' and '.join(ignored)} have no effect with --fp_model (full-precision evaluation).",
                          stacklevel=2)
        return
    raise NotAvailableYet("Quantization (any run without --fp_model, including --dfq, --gen_img and --recon) "
                          "is not available yet in this version; use --fp_model for full-precision evaluation.")


def run(config: RunConfig) -> dict[str, Any] | None:
    """Run the pipeline for ``config``; return the result record, or None when skipped."""
    output = output_path(config)
    if config.skip_existing and output.exists():
        print(f"Skipping: {output} exists (--skip_existing).")
        return None
    _check_stages_available(config)
    check_dataset(config.dataset, config.dataset_root, config.split)
    device = resolve_device(config.device)
    seed_everything(config.seed)

    timer = StageTimer()
    with timer.stage("load_model"):
        loaded = load_clip(config.model, device, config.model_cache_dir)
    print(f"Loaded {config.model} ({loaded.source}) on {device}, input {loaded.resolution} px.")
    eval_set = build_dataset(config.dataset, config.dataset_root, config.split, loaded.preprocess)

    model = loaded.model
    with timer.stage("evaluation"), torch.no_grad():
        metrics = evaluate_zeroshot(model, eval_set, device, batch_size=config.batch_size,
                                    num_workers=config.num_workers, amp=not config.no_amp)

    record = build_record(config, metrics, timer, device)
    write_result(output, record)
    print(f"{config.dataset} {config.model} [{config.method}]: acc1 {metrics['acc1']:.4f}  "
          f"acc5 {metrics['acc5']:.4f}  mean per-class recall {metrics['mean_per_class_recall']:.4f}  -> {output}")
    return record
