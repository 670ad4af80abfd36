"""One run: load CLIP -> calibration data -> (pseudo images) -> quantize -> calibrate ->
(reconstruct) -> zero-shot evaluation -> result file.

Everything that can be checked without a model (flags, every output location, the quantization
config, the prompt file, the datasets' files, the model cache entry) is checked first
(:mod:`d4c.preflight`), so a mistake costs seconds, not a model load.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from d4c.config import RunConfig
from d4c.data.datasets import build_dataset
from d4c.data.prompts import PromptSet, load_prompt_file
from d4c.errors import D4CError
from d4c.evaluation import evaluate_zeroshot
from d4c.models.identity import model_identity
from d4c.models.loading import LoadedModel, load_clip
from d4c.preflight import check_run, finished_result
from d4c.quantization.calibration import calibrate, calibration_images, calibration_tokens
from d4c.quantization.qconfig import QConfig, load_qconfig, qconfig_from_dict
from d4c.quantization.quant_clip import quantize_clip
from d4c.quantization.weight_ranges import WeightRangeCache
from d4c.quantization.state import load_quant_state, quant_state_path, restore_quantized, save_quant_state
from d4c.reconstruction import reconstruct
from d4c.reconstruction.checkpoint import ReconCheckpoint, recon_checkpoint_path
from d4c.results import StageTimer, build_record, output_path, write_result
from d4c.runtime import resolve_device, seed_everything


def _tensor_sha256(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's values (float32 bytes, on the CPU)."""
    return hashlib.sha256(tensor.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


@dataclass
class QuantPlan:
    """What the quantization stages need, read and validated before any model is loaded."""

    qconfig: QConfig
    prompts: PromptSet | None = None
    saved: dict[str, Any] | None = None
    """A saved quantized model (``--load_quant``): no calibration data, no calibration."""
    record: dict[str, Any] = field(default_factory=dict)
    """What the result file records about quantization besides the config."""


def _warn_ignored(config: RunConfig) -> None:
    if config.fp_model:
        ignored = [flag for flag, on in (("--recon", config.recon), ("--dfq", config.dfq)) if on]
        if ignored:
            warnings.warn(f"{' and '.join(ignored)} have no effect with --fp_model (full-precision evaluation).",
                          stacklevel=3)
    elif config.recon_iters is not None and not config.recon and not config.load_quant:
        warnings.warn("--recon_iters has no effect without --recon.", stacklevel=3)
    elif config.load_quant:
        ignored = [flag for flag, on in (("--recon", config.recon), ("--dfq", config.dfq),
                                         ("--recon_iters", config.recon_iters is not None)) if on]
        if ignored:
            warnings.warn(f"{' and '.join(ignored)} have no effect with --load_quant (the saved model is "
                          "evaluated as it is).", stacklevel=3)


def _plan_quantization(config: RunConfig) -> QuantPlan | None:
    """Read and validate the quantization inputs (config file, prompts, saved state); None for FP runs."""
    if config.fp_model:
        return None
    if config.load_quant:
        saved = load_quant_state(config.load_quant)
        identity = model_identity(config.model)
        if not identity.matches(saved.get("model_identity"), saved.get("model")):
            raise D4CError(f"--load_quant {config.load_quant} holds a quantized {saved.get('model')}, not --model "
                           f"{identity.describe()}; pass --model {saved.get('model')} (or the same checkpoint file).")
        plan = QuantPlan(qconfig_from_dict(saved["q_config"], saved.get("q_config_path", "")), saved=saved)
        info = saved.get("info", {})
        plan.record = {"quant_state": str(Path(config.load_quant)), "loaded_quant_state": True,
                       "method": info.get("method", config.method), "recon": info.get("recon", False)}
        return plan
    qconfig = load_qconfig(config.q_config, config.recon_iters)
    prompts = load_prompt_file(config.custom_file)
    return QuantPlan(qconfig, prompts=prompts)


def _quantize(config: RunConfig, loaded: LoadedModel, eval_set, plan: QuantPlan, timer: StageTimer,
              device: torch.device, output: Path) -> torch.nn.Module:
    """Quantize, calibrate, optionally reconstruct, and save ``loaded.model``; return the quantized model."""
    model = loaded.model
    if plan.saved is not None:
        with timer.stage("calibration"):
            model, _ = restore_quantized(model, plan.saved)
        print(f"Loaded the quantized model {config.load_quant} (no calibration).")
        return model

    qconfig = plan.qconfig
    image_stage = "generation" if config.gen_img else "calibration"
    with timer.stage(image_stage):
        images = calibration_images(config, loaded, qconfig.calibrate.visual, device)
    with timer.stage("calibration"):
        tokens = calibration_tokens(eval_set.templates, plan.prompts, qconfig.calibrate.text, config.seed,
                                    getattr(model, "context_length", 77)).to(device)
        quantize_clip(model, qconfig)
        weights = calibrate(model, images, tokens, range_cache=WeightRangeCache.from_flag(config.range_cache_dir))
    print(f"Calibrated on {images.shape[0]} {config.method} images and {tokens.shape[0]} texts "
          f"in {timer.seconds['calibration']:.1f} s.")
    plan.record = {"calibration_data": {"images": int(images.shape[0]), "texts": int(tokens.shape[0]),
                                        "image_source": config.method},
                   "weight_ranges": {"from_cache": weights.from_cache, "cache": str(weights.cache_path or "")}}
    if config.recon:
        # The images' digest, not their recipe: a checkpoint made on other pseudo images (another
        # --gen_iter, schedule, learning rate or generation-code version) must never be resumed.
        fingerprint = {"model": config.model, "q_config": qconfig.as_dict(), "seed": config.seed,
                       "method": config.method, "dataset": config.dataset, "custom_file": config.custom_file,
                       "images": list(images.shape), "images_sha256": _tensor_sha256(images),
                       "texts": list(tokens.shape)}
        checkpoint = ReconCheckpoint(recon_checkpoint_path(output), fingerprint)
        with timer.stage("reconstruction"):
            reports = reconstruct(model, images, tokens, qconfig.recon, device, seed=config.seed,
                                  checkpoint=checkpoint)
        checkpoint.remove()
        iters = sum(r.iters for r in reports)
        print(f"Reconstructed {len(reports)} units ({qconfig.recon.iters} steps each) in "
              f"{timer.seconds['reconstruction']:.1f} s.")
        plan.record["reconstruction_units"] = [r.as_dict() for r in reports]
        plan.record["reconstruction_steps"] = iters
    state_path = quant_state_path(output)
    save_quant_state(state_path, model, qconfig, config.model,
                     info={"method": config.method, "recon": bool(config.recon), "seed": config.seed,
                           "dataset": config.dataset}, identity=model_identity(config.model).as_dict())
    plan.record["quant_state"] = str(state_path)
    return model


def run(config: RunConfig) -> dict[str, Any] | None:
    """Run the pipeline for ``config``; return the result record, or None when skipped."""
    output = output_path(config)
    if config.skip_existing and finished_result(output, model_identity(config.model)):
        print(f"Skipping: {output} holds this model's result (--skip_existing).")
        return None
    check_run(config, output)
    _warn_ignored(config)
    plan = _plan_quantization(config)
    device = resolve_device(config.device)
    seed_everything(config.seed)

    timer = StageTimer()
    with timer.stage("load_model"):
        loaded = load_clip(config.model, device, config.model_cache_dir)
    print(f"Loaded {config.model} ({loaded.source}) on {device}, input {loaded.resolution} px.")
    eval_set = build_dataset(config.dataset, config.dataset_root, config.split, loaded.preprocess)

    model = loaded.model
    if plan is not None:
        model = _quantize(config, loaded, eval_set, plan, timer, device, output)
    with timer.stage("evaluation"), torch.no_grad():
        metrics = evaluate_zeroshot(model, eval_set, device, batch_size=config.batch_size,
                                    num_workers=config.num_workers, amp=not config.no_amp)

    quant_config = None
    if plan is not None:
        quant_config = {"path": plan.qconfig.path, **plan.qconfig.as_dict()}
    record = build_record(config, metrics, timer, device, quant_config=quant_config,
                          extra=plan.record if plan is not None else None)
    write_result(output, record)
    print(f"{config.dataset} {config.model} [{record['method']}{' +recon' if record['recon'] else ''}]: "
          f"acc1 {metrics['acc1']:.4f}  acc5 {metrics['acc5']:.4f}  "
          f"mean per-class recall {metrics['mean_per_class_recall']:.4f}  -> {output}")
    return record
