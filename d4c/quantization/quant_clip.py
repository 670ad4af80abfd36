"""Quantized CLIP (docs/method.md, "What is quantized"): wrap both encoders in place, switch quantizers on and off.

What is quantized (each with a weight quantizer and an input quantizer):

* ModifiedResNet: conv1, conv2, conv3 of every Bottleneck; the attention pool's q/k/v/c_proj with
  quantizers on the projected q, k, v and the softmax output;
* VisionTransformer and the text Transformer: per residual block, q/k/v (split from the packed
  in-projection) and the out projection with the same attention quantizers, and the MLP's c_fc
  and c_proj.

Everything else stays full precision (stems, downsample branches, patch/class/positional/token
embeddings, LayerNorms, BatchNorms, projections, residual adds, ``q k^T`` and ``A v``).

Exceptions applied while wrapping: the inputs of q/k/v and c_fc in every transformer block (image
and text) are quantized per channel over the hidden (last) dimension, and so is the c_proj input
of the text MLPs; every quantizer of the text MLPs (weights and inputs) is 8-bit.

The same rules apply to both model families (OpenAI's ``clip`` and open_clip; their towers are
found through :func:`d4c.models.family.family_of`). A freshly wrapped model has every quantizer
disabled and computes what the original computes.
"""

from __future__ import annotations

from typing import Iterator

from torch import nn

from d4c.models.family import RESNET, family_of, is_bottleneck
from d4c.quantization.fake_quant import FakeQuantizeBase
from d4c.quantization.modules import (ACTIVATION, WEIGHT, QuantAttentionPool2d, QuantConv2d, QuantLinear,
                                      QuantMultiheadAttention)
from d4c.quantization.qconfig import QConfig

HIDDEN_AXIS = 2
"""Channel axis of per-channel activations: the hidden dimension of ``[L, N, D]`` (and of ``[N, L, D]``)."""
TEXT_MLP_BIT = 8


def _wrap_block(block: nn.Module, qconfig: QConfig, text: bool) -> None:
    w_config, a_config = qconfig.w_qconfig, qconfig.a_qconfig
    block.attn = QuantMultiheadAttention(block.attn, w_config, a_config, input_ch_axis=HIDDEN_AXIS)
    if text:
        w_config, a_config = w_config.with_bit(TEXT_MLP_BIT), a_config.with_bit(TEXT_MLP_BIT)
    mlp = block.mlp
    mlp.c_fc = QuantLinear(mlp.c_fc, w_config, a_config, act_ch_axis=HIDDEN_AXIS)
    mlp.c_proj = QuantLinear(mlp.c_proj, w_config, a_config, act_ch_axis=HIDDEN_AXIS if text else None)


def _wrap_resnet(visual: nn.Module, qconfig: QConfig) -> None:
    w_config, a_config = qconfig.w_qconfig, qconfig.a_qconfig
    for module in visual.modules():
        if is_bottleneck(module):
            for name in ("conv1", "conv2", "conv3"):
                setattr(module, name, QuantConv2d(getattr(module, name), w_config, a_config))
    if type(visual.attnpool).__name__ != "AttentionPool2d":
        raise ValueError(f"the ResNet's attention pool is a {type(visual.attnpool).__name__}, not an AttentionPool2d")
    visual.attnpool = QuantAttentionPool2d(visual.attnpool, w_config, a_config)


def is_quantized(model: nn.Module) -> bool:
    """True when ``model`` already holds quantizers."""
    return any(isinstance(m, FakeQuantizeBase) for m in model.modules())


def quantize_clip(model: nn.Module, qconfig: QConfig) -> nn.Module:
    """Wrap ``model``'s image and text encoders in place (quantizers disabled); return it.

    Args:
        model: a full-precision CLIP of a supported family (``clip.model.CLIP``, ``open_clip.CLIP``) with a
            ModifiedResNet or VisionTransformer image tower.
        qconfig: the weight and activation quantizers (``w_qconfig``, ``a_qconfig``) every layer gets; the
            model's exceptions (per-channel inputs, 8-bit text MLPs) are applied on top.

    Raises:
        ValueError: when the model is already quantized.
        D4CError: when the model's towers are of a kind d4c cannot quantize (one sentence).
    """
    if is_quantized(model):
        raise ValueError("the model is already quantized")
    family = family_of(model)
    family.check_supported()
    if family.image_kind == RESNET:
        _wrap_resnet(model.visual, qconfig)
    else:
        for block in family.image_tower.blocks:
            _wrap_block(block, qconfig, text=False)
    for block in family.text_tower.blocks:
        _wrap_block(block, qconfig, text=True)
    return model


def named_quantizers(model: nn.Module, role: str | None = None) -> Iterator[tuple[str, FakeQuantizeBase]]:
    """Every quantizer of ``model`` (only ``weight`` or ``activation`` ones when ``role`` is given)."""
    for name, module in model.named_modules():
        if isinstance(module, FakeQuantizeBase) and (role is None or module.role == role):
            yield name, module


def set_quant_state(model: nn.Module, observe: bool = False, quantize: bool = True, role: str | None = None) -> None:
    """Turn observers and fake quantization of ``model``'s quantizers (of ``role``) on or off."""
    for _, quantizer in named_quantizers(model, role):
        quantizer.observer_enabled = observe
        quantizer.fake_quant_enabled = quantize


def disable_quantization(model: nn.Module) -> None:
    """Every quantizer becomes the identity (full-precision behaviour)."""
    set_quant_state(model, observe=False, quantize=False)


def enable_quantization(model: nn.Module) -> None:
    """Every quantizer quantizes with its current scale and zero point (observers off)."""
    set_quant_state(model, observe=False, quantize=True)


def quantized_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Every layer holding a weight quantizer (QuantLinear / QuantConv2d), in forward order."""
    for name, module in model.named_modules():
        if isinstance(module, (QuantLinear, QuantConv2d)):
            yield name, module


__all__ = ["ACTIVATION", "WEIGHT", "HIDDEN_AXIS", "quantize_clip", "is_quantized", "named_quantizers",
           "set_quant_state", "disable_quantization", "enable_quantization", "quantized_layers"]
