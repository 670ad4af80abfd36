"""One run: load CLIP -> calibration images (real, noise or pseudo) -> quantize -> calibrate ->
(the pseudo-image method's own refinement) -> (reconstruct) -> zero-shot evaluation -> result file.

The pipeline owns the order of the stages and the choice of the calibration images; each stage
takes plain arguments and returns its part of the result record. Everything that can be checked
without a model (flags, every output location, the quantization config, the prompt file, the
datasets' files, the model cache entry) is checked first (:mod:`d4c.preflight`), so a mistake
costs seconds, not a model load.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from d4c.config import RunConfig
from d4c.data.datasets import build_dataset, sample_images
from d4c.data.prompts import PromptSet, calibration_tokens, load_prompt_file
from d4c.errors import D4CError
from d4c.evaluation import evaluate_zeroshot
from d4c.generation import synthesize
from d4c.generation.cache import PseudoImageCache
from d4c.generation.methods import method_class
from d4c.generation.rows import row_of
from d4c.generation.settings import GenerationSettings
from d4c.generation.synthesis import SynthesisOutcome
from d4c.models.family import family_of
from d4c.models.identity import ModelIdentity, model_identity
from d4c.models.loading import LoadedModel, load_clip
from d4c.preflight import check_generation, check_run, finished_result
from d4c.quantization.calibration import calibrate
from d4c.quantization.qconfig import QConfig, load_qconfig, qconfig_from_dict
from d4c.quantization.quant_clip import quantize_clip
from d4c.quantization.state import load_quant_state, quant_state_path, restore_quantized, save_quant_state
from d4c.quantization.weight_ranges import WeightRangeCache
from d4c.reconstruction import reconstruct
from d4c.reconstruction.checkpoint import ReconCheckpoint, recon_checkpoint_path
from d4c.results import GENERATION_TASK, StageTimer, build_record, output_path, write_result
from d4c.runtime import ProcessShare, process_share, resolve_device, seed_everything, share_device

logger = logging.getLogger(__name__)


def _tensor_sha256(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's values (float32 bytes, on the CPU)."""
    return hashlib.sha256(tensor.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


@dataclass
class QuantPlan:
    """What the quantization stages need, read and validated before any model is loaded."""

    qconfig: QConfig
    prompts: PromptSet | None = None
    """The prompt file (calibration texts; generation prompts of the pseudo-image rows)."""
    saved: dict[str, Any] | None = None
    """A saved quantized model (``--load_quant``): no calibration data, no calibration."""


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


def _model_words(model: str | None, model_type: str, pretrained: str | None) -> str:
    """How a model is selected, as flags: ``--model ViT-B-32 --model_type open_clip --pretrained TAG``."""
    words = f"--model {model}"
    if model_type != "openai":
        words += f" --model_type {model_type}"
    return words + (f" --pretrained {pretrained}" if pretrained is not None else "")


def _identity(config: RunConfig) -> ModelIdentity:
    """The identity of the run's model (:mod:`d4c.models.identity`): which weights, in which family."""
    return model_identity(config.model, config.model_type, config.pretrained)


def _model_fields(config: RunConfig) -> dict[str, Any]:
    """The model's identity beyond ``--model`` (for checkpoints and saved models); empty for OpenAI models,
    whose records keep their earlier form."""
    if config.model_type == "openai":
        return {}
    return {"model_type": config.model_type, "pretrained": config.pretrained}


def _plan_quantization(config: RunConfig) -> QuantPlan | None:
    """Read and validate the quantization inputs (config file, prompts, saved state); None for FP runs."""
    if config.fp_model:
        return None
    if config.load_quant:
        saved = load_quant_state(config.load_quant)
        identity = _identity(config)
        recorded = saved.get("model_identity") if isinstance(saved.get("model_identity"), dict) else {}
        if not identity.matches(recorded, saved.get("model")):
            if identity.model_type is None and not recorded.get("model_type"):
                raise D4CError(f"--load_quant {config.load_quant} holds a quantized {saved.get('model')}, not --model "
                               f"{identity.describe()}; pass --model {saved.get('model')} (or the same checkpoint "
                               "file).")
            info = saved.get("info", {})
            made_from = (saved.get("model"), recorded.get("model_type") or "openai", info.get("pretrained"))
            raise D4CError(f"--load_quant {config.load_quant} holds a quantized {_model_words(*made_from)}, not "
                           f"{_model_words(config.model, config.model_type, config.pretrained)}; pass the flags "
                           "it was made with (the same weights).")
        return QuantPlan(qconfig_from_dict(saved["q_config"], saved.get("q_config_path", "")), saved=saved)
    return QuantPlan(load_qconfig(config.q_config, config.recon_iters), prompts=load_prompt_file(config.custom_file))


def _calibration_images(config: RunConfig, plan: QuantPlan, loaded: LoadedModel, device: torch.device,
                        timer: StageTimer) -> tuple[torch.Tensor, SynthesisOutcome | None]:
    """The run's ``calibrate.visual`` calibration images on ``device``: pseudo images (Gaussian noise
    included: the generation stage; with how they were made) or random training images (part of the
    calibration stage)."""
    count = plan.qconfig.calibrate.visual
    settings = config.pseudo_image_settings(count)
    if settings is not None:
        outcome = _pseudo_images(config, plan, loaded, device, timer, settings)
        return outcome.images, outcome
    with timer.stage("calibration"):
        train = build_dataset(config.dataset, config.dataset_root, config.train_split, loaded.preprocess)
        if len(train) < count:
            raise D4CError(f"--train_split {config.train_split} of {config.dataset} has {len(train)} images, fewer "
                           f"than the {count} calibration images calibrate.visual asks for.")
        return sample_images(train, count, config.seed, config.num_workers).to(device), None


def _pseudo_images(config: RunConfig, plan: QuantPlan, loaded: LoadedModel, device: torch.device, timer: StageTimer,
                   settings: GenerationSettings, share: ProcessShare = ProcessShare()) -> SynthesisOutcome:
    """The run's pseudo images through the cache (the generation stage); ``timer.parts`` gets their record."""
    with timer.stage("generation"):
        outcome = synthesize(settings, loaded, device, plan.prompts.prompts(),
                             cache=PseudoImageCache.from_flag(config.gen_cache_dir), force=config.gen_force,
                             img_path=config.img_path, share=share)
    timer.parts["pseudo_images"] = {
        "row": row_of(outcome.settings), "num_images": settings.num_images, "gen_groups": settings.gen_groups,
        "from_cache": outcome.from_cache, "cache_path": str(outcome.cache_path) if outcome.cache_path else None,
        "key": outcome.key, "generation_seconds": round(outcome.generation_seconds, 3),
        "resumed_from": outcome.resumed_from, "final_loss": outcome.final_loss, "complete": outcome.complete}
    return outcome


def generate_only(config: RunConfig) -> dict[str, Any]:
    """``--gen_only``: the run's pseudo images into the cache (this process's share of a split generation under
    torchrun / srun), and a generation record at ``--output`` (rank 0)."""
    output = output_path(config)
    if config.skip_existing and finished_result(output, _identity(config)):
        logger.info(f"Skipping: {output} holds this model's generation record (--skip_existing).")
        return {}
    check_generation(config, output)
    plan = _plan_quantization(config)
    share = process_share()
    device = resolve_device(share_device(config.device, share))
    timer = StageTimer()
    with timer.stage("load_model"):
        loaded = load_clip(config.model, device, config.model_cache_dir, config.model_type, config.pretrained)
    settings = config.pseudo_image_settings(plan.qconfig.calibrate.visual)
    outcome = _pseudo_images(config, plan, loaded, device, timer, settings, share)
    record = build_record(config, {}, timer, device, task=GENERATION_TASK, extra=timer.parts)
    if outcome.complete:
        write_result(output, record)
        logger.info(f"{config.model} [{record['method']}]: pseudo images in {outcome.cache_path} -> {output}")
    return record


def _calibrate(config: RunConfig, plan: QuantPlan, model: torch.nn.Module, images: torch.Tensor,
               templates: list[str], device: torch.device, timer: StageTimer) -> tuple[torch.Tensor, dict]:
    """Quantize and calibrate ``model`` in place; return the calibration texts and the record's part."""
    with timer.stage("calibration"):
        tokens = calibration_tokens(templates, plan.prompts, plan.qconfig.calibrate.text, config.seed,
                                    tokenize=family_of(model).tokenize).to(device)
        quantize_clip(model, plan.qconfig)
        weights = calibrate(model, images, tokens, range_cache=WeightRangeCache.from_flag(config.range_cache_dir))
    logger.info(f"Calibrated on {images.shape[0]} {config.row} images and {tokens.shape[0]} texts "
                f"in {timer.seconds['calibration']:.1f} s.")
    return tokens, {"calibration_data": {"images": int(images.shape[0]), "texts": int(tokens.shape[0]),
                                         "image_source": config.row},
                    "weight_ranges": {"from_cache": weights.from_cache, "cache": str(weights.cache_path or "")}}


def _refine(plan: QuantPlan, model: torch.nn.Module, outcome: SynthesisOutcome | None, device: torch.device,
            timer: StageTimer) -> dict:
    """The pseudo-image method's own step on the calibrated model, when its settings ask for one (EnhancingDFQ's
    quantization loop); return the record's part."""
    step = None if outcome is None else method_class(outcome.settings.method).quantized_refinement(outcome.settings)
    if step is None:
        return {}
    with timer.stage("finetune"):
        part = step(model, outcome, plan.prompts.prompts(), device)
    logger.info(f"Refined the quantized model with {outcome.settings.method}'s own step in "
                f"{timer.seconds['finetune']:.1f} s.")
    return {"finetune": part}


def _reconstruct(config: RunConfig, plan: QuantPlan, model: torch.nn.Module, images: torch.Tensor,
                 tokens: torch.Tensor, device: torch.device, timer: StageTimer, output: Path,
                 refinement: dict | None = None) -> dict:
    """Reconstruct ``model`` in place (resumable); return the record's part."""
    qconfig = plan.qconfig
    # The images' digest, not their recipe: a checkpoint made on other pseudo images (another
    # --gen_iter, schedule, learning rate or generation-code version) must never be resumed.
    fingerprint = {"model": config.model, **_model_fields(config), "q_config": qconfig.as_dict(), "seed": config.seed,
                   "method": config.row, "dataset": config.dataset, "custom_file": config.custom_file,
                   "images": list(images.shape), "images_sha256": _tensor_sha256(images),
                   "texts": list(tokens.shape)}
    if refinement is not None:  # calibrated ranges changed before reconstruction
        fingerprint["finetune"] = refinement.get("settings")
    checkpoint = ReconCheckpoint(recon_checkpoint_path(output), fingerprint)
    with timer.stage("reconstruction"):
        reports = reconstruct(model, images, tokens, qconfig.recon, device, seed=config.seed, checkpoint=checkpoint,
                              compile=config.compile)
    checkpoint.remove()
    logger.info(f"Reconstructed {len(reports)} units ({qconfig.recon.iters} steps each) in "
                f"{timer.seconds['reconstruction']:.1f} s.")
    return {"reconstruction_units": [r.as_dict() for r in reports],
            "reconstruction_steps": sum(r.iters for r in reports)}


def _quantize(config: RunConfig, loaded: LoadedModel, templates: list[str], plan: QuantPlan, timer: StageTimer,
              device: torch.device, output: Path) -> tuple[torch.nn.Module, dict]:
    """The quantized model (calibrated, optionally reconstructed, saved) and the record's part."""
    model = loaded.model
    if plan.saved is not None:
        with timer.stage("calibration"):
            model, _ = restore_quantized(model, plan.saved)
        logger.info(f"Loaded the quantized model {config.load_quant} (no calibration).")
        info = plan.saved.get("info", {})
        return model, {"quant_state": str(Path(config.load_quant)), "loaded_quant_state": True,
                       "method": info.get("method", config.row), "recon": info.get("recon", False)}

    images, outcome = _calibration_images(config, plan, loaded, device, timer)
    tokens, part = _calibrate(config, plan, model, images, templates, device, timer)
    part.update(_refine(plan, model, outcome, device, timer))
    if config.recon:
        part.update(_reconstruct(config, plan, model, images, tokens, device, timer, output, part.get("finetune")))
    state_path = quant_state_path(output)
    save_quant_state(state_path, model, plan.qconfig, config.model,
                     info={"method": config.row, "recon": bool(config.recon), "seed": config.seed,
                           "dataset": config.dataset, **_model_fields(config)}, identity=_identity(config).as_dict())
    return model, {**part, **timer.parts, "quant_state": str(state_path)}


def run(config: RunConfig) -> dict[str, Any] | None:
    """Run the pipeline for ``config``; return the result record, or None when skipped."""
    if config.gen_only:
        return generate_only(config)
    output = output_path(config)
    if config.skip_existing and finished_result(output, _identity(config)):
        logger.info(f"Skipping: {output} holds this model's result (--skip_existing).")
        return None
    check_run(config, output)
    _warn_ignored(config)
    plan = _plan_quantization(config)
    device = resolve_device(config.device)
    seed_everything(config.seed)

    timer = StageTimer()
    with timer.stage("load_model"):
        loaded = load_clip(config.model, device, config.model_cache_dir, config.model_type, config.pretrained)
    logger.info(f"Loaded {config.model} ({loaded.model_type}: {loaded.source}) on {device}, input "
                f"{loaded.resolution} px.")
    eval_set = build_dataset(config.dataset, config.dataset_root, config.split, loaded.preprocess)

    model, quant_part = loaded.model, {}
    if plan is not None:
        model, quant_part = _quantize(config, loaded, eval_set.templates, plan, timer, device, output)
    with timer.stage("evaluation"), torch.no_grad():
        metrics = evaluate_zeroshot(model, eval_set, device, batch_size=config.batch_size,
                                    num_workers=config.num_workers, amp=not config.no_amp)

    quant_config = None if plan is None else {"path": plan.qconfig.path, **plan.qconfig.as_dict()}
    record = build_record(config, metrics, timer, device, quant_config=quant_config, extra=quant_part)
    write_result(output, record)
    logger.info(f"{config.dataset} {config.model} [{record['method']}{' +recon' if record['recon'] else ''}]: "
                f"acc1 {metrics['acc1']:.4f}  acc5 {metrics['acc5']:.4f}  "
                f"mean per-class recall {metrics['mean_per_class_recall']:.4f}  -> {output}")
    return record
