"""Block reconstruction (docs/method.md, "Reconstruction"): AdaRound rounding and LSQ activation scales, unit by unit.

For each unit (:mod:`d4c.reconstruction.units`), image encoder first, then text:

1. cache the unit's input from the quantized model (earlier units already reconstructed,
   quantization on) and its output from a full-precision copy (:mod:`d4c.reconstruction.cache`);
2. for ``iters`` steps, sample ``*_batch_size`` cached rows with replacement and minimise
   ``mean(sum_1 (y_hat - y)^2) + weight * sum(1 - |2 h(alpha) - 1|^b)``, where by default
   (``loss_sum: dim1``, the reference's reduction) the sum runs over dimension 1 of the batch-first
   tensors — tokens of ``[N, L, D]`` transformer outputs, channels of ``[N, C, H, W]`` conv outputs —
   and the mean over the rest; ``loss_sum: channels`` sums over each token's features instead
   (with ``token_loss: relevant`` only the tokens that can reach the encoder output count); the
   rounding term starts after ``warm_up * iters`` steps and ``b`` decays linearly from
   ``b_range[0]`` to ``b_range[1]`` over the remaining steps;
   AdaRound ``alpha`` with Adam (lr 1e-3), the unit's LSQ scales (and LSQ+ zero points) with Adam
   at ``*_scale_lr``, cosine-annealed to 0 over ``iters``;
3. QDrop: while the unit trains, its activation quantizers keep each element's quantized value
   with probability ``drop_prob`` and its unquantized value otherwise, so the unit input mixes
   quantized and full-precision values elementwise; reset to 1 afterwards;
4. harden the rounding (written into the weights).

Only ``alpha`` and the unit's scales require gradients; every other tensor is frozen.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from d4c.acceleration import compile_reconstruction
from d4c.quantization.fake_quant import AdaRoundFakeQuantize, FakeQuantizeBase
from d4c.quantization.modules import ACTIVATION, QuantConv2d, QuantLinear
from d4c.quantization.qconfig import ReconConfig
from d4c.quantization.quant_clip import disable_quantization
from d4c.reconstruction.cache import DEFAULT_CHUNK, apply_chunked, capture_inputs, capture_output
from d4c.reconstruction.checkpoint import ReconCheckpoint
from d4c.reconstruction.forward import UnitForward
from d4c.reconstruction.step import StepLoss
from d4c.reconstruction.units import Unit, encoder_plans
from d4c.runtime import adam

ALPHA_LR = 1e-3
TRUNCATE_PADDING = True
"""With ``token_loss: relevant``, reconstruct text units on sequences cut after the longest text."""
LOG_EVERY = 50
"""Steps between progress-bar loss updates (each costs one device synchronisation)."""

logger = logging.getLogger(__name__)


@dataclass
class UnitReport:
    """What reconstructing one unit did."""

    name: str
    iters: int
    error_before: float
    """Reconstruction loss on all cached rows with round-to-nearest weights (before)."""
    error_after: float
    """The same after reconstruction and hardening."""
    seconds: float
    seconds_per_iter: float

    def as_dict(self) -> dict:
        return asdict(self)


def rounding_exponent(step: int, iters: int, warm_up: float, b_range: tuple[float, float]) -> float | None:
    """The exponent ``b`` of the rounding loss at ``step``, or None during warm-up (no rounding loss)."""
    start = warm_up * iters
    if step < start:
        return None
    progress = (step - start) / max(iters - start, 1e-12)
    b_start, b_end = b_range
    return b_end + (b_start - b_end) * max(0.0, 1.0 - progress)


def loss_sum_dim(unit: Unit, loss_sum: str) -> int:
    """The dimension (batch-first layout) the loss of ``unit`` sums over under ``recon.loss_sum``."""
    return 1 if loss_sum == "dim1" else unit.channel_dim


def _error_terms(out: torch.Tensor, target: torch.Tensor, sum_dim: int,
                 mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | float]:
    """The summed squared error of the counted elements and the count the loss divides it by."""
    if mask is None:
        return F.mse_loss(out, target, reduction="sum"), out.numel() / out.shape[sum_dim]
    weights = mask.unsqueeze(-1).to(out.dtype)  # [N, L] over [N, L, D]
    squared = F.mse_loss(out * weights, target * weights, reduction="sum")
    if sum_dim % out.dim() == out.dim() - 1:  # summed over features: the mean runs over the kept tokens
        return squared, weights.sum()
    return squared, out.numel() / out.shape[sum_dim]  # summed over tokens: the mean over images and features


def reconstruction_loss(out: torch.Tensor, target: torch.Tensor, sum_dim: int,
                        mask: torch.Tensor | None = None) -> torch.Tensor:
    """``mean(sum over sum_dim of (out - target)^2)`` of batch-first tensors.

    ``mask`` (``[N, L]`` for token outputs ``[N, L, D]``) keeps only those tokens: summing over
    features (``sum_dim = -1``) the mean runs over the kept tokens; summing over tokens
    (``sum_dim = 1``) the sum runs over the kept tokens. Without a mask the loss is one fused
    reduction (no per-position temporaries).
    """
    squared, count = _error_terms(out, target, sum_dim, mask)
    return squared / (count.clamp(min=1) if isinstance(count, torch.Tensor) else count)


@torch.no_grad()
def unit_error(forward: UnitForward, target: torch.Tensor, device: torch.device, sum_dim: int,
               mask: torch.Tensor | None = None, chunk: int = DEFAULT_CHUNK) -> float:
    """The reconstruction loss of the unit over every cached row (no rounding term)."""
    total, count = 0.0, 0.0
    for start in range(0, target.shape[0], chunk):
        out = forward([x[start:start + chunk].to(device) for x in forward.tensors])
        part = None if mask is None else mask[start:start + chunk].to(device)
        squared, part_count = _error_terms(out, target[start:start + chunk].to(device), sum_dim, part)
        total, count = total + float(squared), count + float(part_count)
    return total / max(count, 1.0)


def _rounding_layers(module: nn.Module) -> list[tuple[nn.Module, AdaRoundFakeQuantize]]:
    layers = [m for m in module.modules() if isinstance(m, (QuantLinear, QuantConv2d))]
    return [(layer, layer.weight_quantizer) for layer in layers
            if isinstance(layer.weight_quantizer, AdaRoundFakeQuantize)]


def _activation_quantizers(module: nn.Module) -> list[FakeQuantizeBase]:
    return [m for m in module.modules() if isinstance(m, FakeQuantizeBase) and m.role == ACTIVATION]


def reconstruct_unit(module: nn.Module, inputs: list[torch.Tensor], kwargs: dict, target: torch.Tensor, unit: Unit,
                     config: ReconConfig, batch_size: int, scale_lr: float, device: torch.device,
                     generator: torch.Generator, progress: bool = True, desc: str | None = None,
                     mask: torch.Tensor | None = None, compile: bool = False) -> UnitReport:
    """Reconstruct one unit from its cached batch-first ``inputs`` and full-precision ``target``.

    Args:
        module: the unit's module in the quantized model (trained in place, rounding hardened at the end).
        inputs: its cached positional inputs, batch-first, from the quantized model.
        kwargs: keyword arguments of its call (an attention mask), as cached.
        target: its output in the full-precision model, batch-first.
        unit: the unit's layout (batch axis, channel dimension).
        config: the reconstruction hyper-parameters (``iters``, ``warm_up``, ``weight``, ``b_range``, ...).
        batch_size: cached rows sampled (with replacement) per step.
        scale_lr: Adam learning rate of the unit's LSQ scales (cosine-annealed to 0).
        device: where the unit runs.
        generator: draws the sampled rows (on the cache device).
        progress: show a progress bar.
        desc: the progress bar's label (default: the unit's name).
        mask: ``[N, L]`` output tokens the loss averages over (``token_loss: relevant``), or None for all.
        compile: compile the step (:mod:`d4c.reconstruction.step`; falls back to eager if that fails).

    ``inputs``, ``target`` and ``mask`` live on the cache device (``device``, or the CPU under
    ``keep_gpu: False``).
    """
    start_time = time.perf_counter()
    forward = UnitForward(module, inputs, kwargs, unit, device, target.device)
    sum_dim = loss_sum_dim(unit, config.loss_sum)
    error_before = unit_error(forward, target, device, sum_dim, mask)
    rounding = _rounding_layers(module)
    activations = _activation_quantizers(module)
    for layer, quantizer in rounding:
        quantizer.init_alpha(layer.weight)
        quantizer.alpha.requires_grad_(True)
    scales = [q.scale for q in activations if q.learnable_scale and q.fake_quant_enabled]
    scales += [q.zero_point for q in activations if q.learnable_zero_point and q.fake_quant_enabled]
    for tensor in scales:
        tensor.requires_grad_(True)
    for quantizer in activations:
        quantizer.drop_prob = config.drop_prob

    optimizers: list[torch.optim.Optimizer] = []
    scheduler = None
    if rounding:
        optimizers.append(adam([q.alpha for _, q in rounding], ALPHA_LR))
    if scales:
        scale_optimizer = adam(scales, scale_lr)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(scale_optimizer, T_max=config.iters, eta_min=0.0)
        optimizers.append(scale_optimizer)

    rows = target.shape[0]
    exponents = [rounding_exponent(step, config.iters, config.warm_up, config.b_range) for step in range(config.iters)]
    step_loss = StepLoss(forward, target, mask, sum_dim, reconstruction_loss, [q for _, q in rounding],
                         config.weight, exponents, device, compile=compile and bool(optimizers))
    bar = tqdm(range(config.iters), desc=desc or unit.name, disable=not progress, leave=False, mininterval=0.5)
    loop_start = time.perf_counter()
    if optimizers:
        for step in bar:
            index = torch.randint(rows, (batch_size,), generator=generator, device=target.device)
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            rec_loss, loss = step_loss.backward(step, index)
            for optimizer in optimizers:
                optimizer.step()
            if scheduler is not None:
                scheduler.step()
            if progress and (step % LOG_EVERY == 0 or step == config.iters - 1):
                bar.set_postfix(rec=f"{rec_loss.item():.4g}", total=f"{loss.item():.4g}", refresh=False)
    loop_seconds = time.perf_counter() - loop_start
    bar.close()

    for layer, quantizer in rounding:
        quantizer.harden(layer.weight)
    for tensor in scales:
        tensor.requires_grad_(False)
    for quantizer in activations:
        quantizer.drop_prob = 1.0
    error_after = unit_error(forward, target, device, sum_dim, mask)
    iters = config.iters if optimizers else 0
    return UnitReport(unit.name, iters, error_before, error_after, time.perf_counter() - start_time,
                      loop_seconds / iters if iters else 0.0)


def _truncated_masks(kwargs: dict, keep: int) -> dict:
    """Block keyword arguments for sequences cut to ``keep`` tokens: ``[L, L]`` attention masks cut to ``[keep, keep]``."""
    out = {}
    for key, value in kwargs.items():
        if isinstance(value, torch.Tensor):
            if value.dim() != 2:
                raise ValueError(f"cannot cut the per-sample block argument {key} of shape {tuple(value.shape)}")
            value = value[:keep, :keep]
        out[key] = value
    return out


def reconstruct(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor, config: ReconConfig,
                device: torch.device | str, seed: int = 0, progress: bool = True,
                encoders: tuple[str, ...] = ("visual", "text"),
                checkpoint: ReconCheckpoint | None = None, compile: str = "auto") -> list[UnitReport]:
    """Reconstruct every unit of a calibrated, quantized CLIP ``model`` in place; one report per unit.

    Args:
        model: a calibrated CLIP wrapped by :func:`~d4c.quantization.quant_clip.quantize_clip`.
        images: every reconstruction image (the ``calibrate.visual`` calibration images).
        tokens: every reconstruction text, tokenized (the ``calibrate.text`` calibration texts).
        config: the reconstruction hyper-parameters; ``keep_gpu: False`` keeps the caches on the CPU,
            ``token_loss: relevant`` averages token units' loss over the tokens that can reach the
            encoder output only (see :class:`~d4c.quantization.qconfig.ReconConfig`).
        device: where the units run.
        seed: seeds the row sampling.
        progress: show a progress bar per unit and log its loss before and after.
        encoders: which encoders to reconstruct (``visual``, ``text``), image encoder first.
        checkpoint: finished units are saved now and then and a matching checkpoint is resumed (its
            units are skipped); it is left in place (the caller removes it).
        compile: ``auto``, ``on`` or ``off``: whether the training step is compiled (:mod:`d4c.acceleration`).
    """
    device = torch.device(device)
    compiled = compile_reconstruction(compile, device, config.iters)
    store = device if config.keep_gpu else torch.device("cpu")
    model.eval()
    fp_model = copy.deepcopy(model)
    disable_quantization(fp_model)
    for module in (model, fp_model):
        for parameter in module.parameters():
            parameter.requires_grad_(False)
    generator = torch.Generator(device=store).manual_seed(seed)
    plans = [p for p in encoder_plans(model, config.attention_unit) if p.name in encoders]
    total_units = sum(len(p.units) for p in plans)
    done, saved_reports = checkpoint.load(model, generator) if checkpoint is not None else ([], [])
    reports = [UnitReport(**r) for r in saved_reports]
    for plan in plans:
        data = images if plan.name == "visual" else tokens
        batch_size = config.visual_batch_size if plan.name == "visual" else config.text_batch_size
        scale_lr = config.visual_scale_lr if plan.name == "visual" else config.text_scale_lr
        valid = output = None
        if config.token_loss == "relevant" and plan.token_positions is not None:
            valid, output = (None if m is None else m.to(store) for m in plan.token_positions(data))
        first = plan.blocks[0]
        # The first block's keyword arguments (the attention mask open_clip passes at call time; OpenAI's
        # blocks hold theirs) are passed to every block of the plan, as the encoders do.
        (x_q,), q_kwargs = capture_inputs(lambda d: plan.run(model, d), data, model.get_submodule(first.name),
                                          first.batch_axis, device, store)
        (x_fp,), fp_kwargs = capture_inputs(lambda d: plan.run(fp_model, d), data,
                                            fp_model.get_submodule(first.name), first.batch_axis, device, store)
        if valid is not None and TRUNCATE_PADDING:
            # Positions after every sequence's end-of-text token reach no counted output and (causal
            # mask) no earlier position: dropping them changes no loss, only the cost (and LSQ's
            # size-dependent gradient scale, which Adam normalises away up to its epsilon).
            keep = int(valid.sum(1).max())
            x_q, x_fp = x_q[:, :keep].contiguous(), x_fp[:, :keep].contiguous()
            valid, output = valid[:, :keep], output[:, :keep]
            q_kwargs, fp_kwargs = _truncated_masks(q_kwargs, keep), _truncated_masks(fp_kwargs, keep)
        for block_index, block in enumerate(plan.blocks):
            q_block, fp_block = model.get_submodule(block.name), fp_model.get_submodule(block.name)

            def run_q(d, q_block=q_block, axis=block.batch_axis):
                return q_block(d.movedim(0, axis), **q_kwargs)

            def run_fp(d, fp_block=fp_block, axis=block.batch_axis):
                return fp_block(d.movedim(0, axis), **fp_kwargs)

            for unit in block.units:
                if unit.name in done:
                    continue
                inputs, kwargs = capture_inputs(run_q, x_q, model.get_submodule(unit.name), unit.batch_axis,
                                                device, store)
                target = capture_output(run_fp, x_fp, fp_model.get_submodule(unit.name), unit.batch_axis,
                                        device, store)
                desc = f"recon {len(reports) + 1}/{total_units} {unit.name}"
                mask = output if unit.output_token_only else valid
                report = reconstruct_unit(model.get_submodule(unit.name), inputs, kwargs, target, unit, config,
                                          batch_size, scale_lr, device, generator, progress, desc, mask,
                                          compile=compiled)
                reports.append(report)
                if progress:
                    logger.info(f"{desc}: loss {report.error_before:.4g} -> {report.error_after:.4g} "
                                f"({report.seconds_per_iter * 1e3:.2f} ms/iter)")
                del inputs, target
                if checkpoint is not None:
                    checkpoint.maybe_save(model, generator, [r.name for r in reports], [r.as_dict() for r in reports])
            if block_index + 1 < len(plan.blocks):
                x_q = apply_chunked(lambda d: run_q(d).movedim(block.batch_axis, 0), x_q, device, store)
                x_fp = apply_chunked(lambda d: run_fp(d).movedim(block.batch_axis, 0), x_fp, device, store)
    del fp_model
    return reports
