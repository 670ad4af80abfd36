"""Calibration (docs/method.md, "Calibration"): every quantizer's scale and zero point from one pass.

The activation observers see one forward of the first 32 calibration images and 32 texts
through the full-precision model (every quantizer off); then the weight observers see the
weights directly (no forward pass; batched and cached, :mod:`d4c.quantization.weight_ranges`);
then every quantizer is switched on. Which images and texts
calibrate a run is the pipeline's choice (:mod:`d4c.pipeline`).
"""

from __future__ import annotations

import torch

from d4c.quantization.modules import ACTIVATION, WEIGHT
from d4c.quantization.quant_clip import enable_quantization, set_quant_state
from d4c.quantization.weight_ranges import WeightObservation, WeightRangeCache, observe_weights

ACTIVATION_SAMPLES = 32
"""Images and texts the activation observers see (one forward each)."""


@torch.no_grad()
def calibrate(model: torch.nn.Module, images: torch.Tensor, tokens: torch.Tensor,
              samples: int = ACTIVATION_SAMPLES, progress: bool = True,
              range_cache: WeightRangeCache | None = None) -> WeightObservation:
    """Set every quantizer's scale and zero point of a wrapped CLIP ``model``; leave them all enabled.

    Args:
        model: a CLIP wrapped by :func:`~d4c.quantization.quant_clip.quantize_clip`.
        images: calibration images ``[B, 3, R, R]`` in CLIP's normalised pixel space, on the model's device.
        tokens: tokenized calibration texts ``[T, context_length]``, on the model's device.
        samples: how many of the first images and texts the activation observers see.
        progress: show a progress bar over the weight observers.
        range_cache: where the weight ranges are looked up and stored (none when None).

    Returns:
        How the weight observers were served (batched layers, from the cache or not).
    """
    model.eval()
    set_quant_state(model, observe=False, quantize=False)
    set_quant_state(model, observe=True, quantize=False, role=ACTIVATION)
    model.encode_image(images[:samples])
    model.encode_text(tokens[:samples])
    set_quant_state(model, observe=False, quantize=False)
    report = observe_weights(model, range_cache, progress=progress)
    set_quant_state(model, observe=False, quantize=True, role=WEIGHT)
    enable_quantization(model)
    return report
