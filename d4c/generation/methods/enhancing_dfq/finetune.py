"""The paper's quantization loop (eq. 13) as an option: activation ranges learned on generator batches.

``--edfq finetune=true`` runs it after calibration and before reconstruction. Each of
``finetune_iters`` steps draws a fresh batch of ``gen_batch_size`` images from the trained
generator, runs the image encoder with every quantizer off (the full-precision model P) and on
(the quantized model Q), and takes one Adam step (``finetune_lr``) of the learnable ranges of the
image encoder's activation quantizers (LSQ scales; LSQ+ zero points too) on

    KL( softmax(n(f_I^P(x)) . t / tau) || softmax(n(f_I^Q(x)) . t / tau) )  +  SimLoss_2,

t the full-precision text features of the prompts (the zero-shot head both models share here),
tau = 0.1, and SimLoss_2 = the squared error between P's and Q's features at the J chosen layers
(:func:`~d4c.generation.methods.enhancing_dfq.losses.simloss2`; dropped with ``losses=false``).
The paper learns a clip range ``[0, beta]`` per activation layer; the suite's activation
quantizers are asymmetric LSQ quantizers, so their learnable step size is what is trained (the
range ``[-zp s, (2^b - 1 - zp) s]`` scales with it). Weights and their rounding are left to
reconstruction. Nothing else of the model changes; every flag is restored afterwards.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from d4c.generation.engine import frozen
from d4c.generation.methods.enhancing_dfq.features import EncoderTaps
from d4c.generation.methods.enhancing_dfq.losses import kl_to_teacher, simloss2
from d4c.generation.methods.enhancing_dfq.options import EnhancingDFQOptions
from d4c.generation.methods.enhancing_dfq.sampler import ConditionalSampler
from d4c.generation.pgsi import TAU, encode_text_targets, text_logits
from d4c.quantization.modules import ACTIVATION
from d4c.quantization.quant_clip import named_quantizers
from d4c.runtime import adam

FINETUNE_SEED_OFFSET = 0xF17E


@contextlib.contextmanager
def quantization_off(model: torch.nn.Module) -> Iterator[None]:
    """Every quantizer of ``model`` is the identity inside; each one's flags are restored afterwards."""
    quantizers = [q for _, q in named_quantizers(model)]
    flags = [(q.observer_enabled, q.fake_quant_enabled) for q in quantizers]
    for quantizer in quantizers:
        quantizer.observer_enabled = quantizer.fake_quant_enabled = False
    try:
        yield
    finally:
        for quantizer, (observe, quantize) in zip(quantizers, flags):
            quantizer.observer_enabled, quantizer.fake_quant_enabled = observe, quantize


def activation_ranges(visual: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The learnable range parameters of the image encoder's enabled activation quantizers."""
    quantizers = [q for _, q in named_quantizers(visual, ACTIVATION) if q.fake_quant_enabled]
    return ([q.scale for q in quantizers if q.learnable_scale]
            + [q.zero_point for q in quantizers if q.learnable_zero_point])


def finetune_activation_ranges(model: torch.nn.Module, sampler: ConditionalSampler, prompts: Sequence[str],
                               options: EnhancingDFQOptions, batch_size: int, seed: int, device: torch.device,
                               progress: bool = True) -> dict[str, Any]:
    """Train the activation ranges of a calibrated quantized CLIP ``model`` (module docstring); return a report."""
    device = torch.device(device)
    began = time.perf_counter()
    with quantization_off(model):
        text = encode_text_targets(model, prompts, device)
    ranges = activation_ranges(model.visual)
    generator = torch.Generator(device=device).manual_seed(seed + FINETUNE_SEED_OFFSET)
    taps = EncoderTaps(model, options.layers)
    history: list[tuple[float, float]] = []
    sampler.train()
    with frozen(model), taps:
        for parameter in ranges:
            parameter.requires_grad_(True)
        optimizer = adam(ranges, options.finetune_lr)
        try:
            for _ in tqdm(range(options.finetune_iters), desc="EnhancingDFQ activation ranges", unit="step",
                          disable=not progress, dynamic_ncols=True, leave=False):
                with torch.no_grad():
                    images, _ = sampler(*sampler.draw_inputs(batch_size, generator))
                    with quantization_off(model):
                        teacher = text_logits(model.encode_image(images).float(), text, TAU).softmax(dim=1)
                        full = [f.clone() for f in taps.features]
                student = text_logits(model.encode_image(images).float(), text, TAU)
                kl = kl_to_teacher(student, teacher)
                loss = kl + simloss2(full, taps.features) if options.losses else kl
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                history.append((float(loss.detach()), float(kl.detach())))
        finally:
            for parameter in ranges:
                parameter.requires_grad_(False)
                parameter.grad = None
    return {"settings": {"finetune_iters": options.finetune_iters, "finetune_lr": options.finetune_lr,
                         "losses": options.losses, "batch_size": batch_size, "layers": taps.indices},
            "parameters": len(ranges), "loss_first": history[0][0], "loss_last": history[-1][0],
            "kl_first": history[0][1], "kl_last": history[-1][1], "seconds": round(time.perf_counter() - began, 3)}
