"""Evaluation-time shortcut: fake-quantize every weight once instead of at every forward call.

A quantized layer recomputes ``weight_quantizer(weight)`` in each forward; evaluation calls the
encoders hundreds of times with weights that do not change. :func:`precomputed_weights` swaps each
weight for its fake-quantized value and switches the weight quantizer off for the duration of the
block, then restores both: the forward passes compute exactly the same values (the fake
quantization is deterministic), once.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from d4c.quantization.quant_clip import quantized_layers


@contextmanager
def precomputed_weights(model: nn.Module) -> Iterator[None]:
    """Within the block, every enabled weight quantizer of ``model`` is applied once, up front."""
    swapped = []
    try:
        with torch.no_grad():
            for _, layer in quantized_layers(model):
                quantizer = layer.weight_quantizer
                if not quantizer.fake_quant_enabled or quantizer.observer_enabled:
                    continue
                original, grad = layer.weight.data, layer.weight.requires_grad
                layer.weight.data = quantizer(layer.weight).detach()
                # The quantizer's output never requires grad; matmul folds its inputs differently
                # when one does (float rounding), so the swapped weight must not either.
                layer.weight.requires_grad_(False)
                quantizer.fake_quant_enabled = False
                swapped.append((layer, original, grad))
        yield
    finally:
        for layer, original, grad in swapped:
            layer.weight.data = original
            layer.weight.requires_grad_(grad)
            layer.weight_quantizer.fake_quant_enabled = True
