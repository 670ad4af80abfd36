"""Calibration (docs/method.md, "Calibration"): every quantizer's scale and zero point from one pass.

The activation observers see one forward of the first 32 calibration images and 32 texts
through the full-precision model (every quantizer off); then the weight observers see the
weights directly (no forward pass); then every quantizer is switched on. Which images and texts
calibrate a run is the pipeline's choice (:mod:`d4c.pipeline`).
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from d4c.quantization.modules import ACTIVATION, WEIGHT
from d4c.quantization.quant_clip import enable_quantization, quantized_layers, set_quant_state

ACTIVATION_SAMPLES = 32
"""Images and texts the activation observers see (one forward each)."""


@torch.no_grad()
def calibrate(model: torch.nn.Module, images: torch.Tensor, tokens: torch.Tensor,
              samples: int = ACTIVATION_SAMPLES, progress: bool = True) -> None:
    """Set every quantizer's scale and zero point of a wrapped CLIP ``model``; leave them all enabled.

    Args:
        model: a CLIP wrapped by :func:`~d4c.quantization.quant_clip.quantize_clip`.
        images: calibration images ``[B, 3, R, R]`` in CLIP's normalised pixel space, on the model's device.
        tokens: tokenized calibration texts ``[T, context_length]``, on the model's device.
        samples: how many of the first images and texts the activation observers see.
        progress: show a progress bar over the weight observers.
    """
    model.eval()
    set_quant_state(model, observe=False, quantize=False)
    set_quant_state(model, observe=True, quantize=False, role=ACTIVATION)
    model.encode_image(images[:samples])
    model.encode_text(tokens[:samples])
    set_quant_state(model, observe=False, quantize=False)
    layers = list(quantized_layers(model))
    for _, layer in tqdm(layers, desc="weight observers", disable=not progress, leave=False):
        layer.weight_quantizer.observe(layer.weight)
    set_quant_state(model, observe=False, quantize=True, role=WEIGHT)
    enable_quantization(model)
