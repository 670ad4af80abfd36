"""Reconstruction units of a quantized CLIP (docs/method.md, "Reconstruction"), grouped by their block.

* ResNet image encoder: every Bottleneck is one unit; in the attention pool, q_proj, k_proj,
  v_proj and c_proj are single-layer units.
* ViT image encoder and text encoder: every quantized Linear is its own unit: q_proj, k_proj,
  v_proj, the out projection, c_fc, c_proj (the towers and their layout, sequence- or batch-first,
  come from the model's family, :func:`d4c.models.family.family_of`).

Each unit owns its layers' weight quantizers and input quantizers. By default (``attention_unit:
linear``, the reference implementation's units) the activation quantizers on the projected q, k,
v and on the softmax output belong to no unit: they keep their calibrated scales, and the out
projection's unit takes as input the attention output computed through them (quantization on).
With ``attention_unit: core`` they belong instead to an attention-core unit
(:class:`~d4c.quantization.modules.QuantAttentionCore`: projected q, k, v in, out projection's
output out) that trains their scales together with the out projection.

Blocks (Bottlenecks, the attention pool, residual attention blocks) are the steps in which cached
inputs advance through the network: a block's units are reconstructed in forward order, then the
cached block input is pushed through the finished block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from d4c.models.family import RESNET, TransformerTower, family_of
from d4c.quantization.modules import QuantAttentionPool2d


@dataclass(frozen=True)
class Unit:
    """One reconstruction unit: a sub-module of a block and how its tensors are laid out."""

    name: str
    """Module name in the model (``visual.transformer.resblocks.0.attn.q_proj``)."""
    batch_axis: int
    """Batch dimension of the unit's inputs and output (0 for images and batch-first tokens, 1 for
    sequence-first tokens)."""
    channel_dim: int
    """Channel dimension in the batch-first layout: conv channels (1), or token features (-1); the
    loss sums over it under ``recon.loss_sum: channels`` (the default sums over dimension 1)."""
    output_token_only: bool = False
    """Only the encoder's output token (ViT class token, text end-of-text token) of this unit's output
    can reach the encoder's output (the last block's q projection, attention and MLP)."""


@dataclass(frozen=True)
class Block:
    """A block whose input is cached and advanced; its units are reconstructed in order."""

    name: str
    batch_axis: int
    units: tuple[Unit, ...]


@dataclass
class EncoderPlan:
    """The blocks of one encoder and how to run the encoder on its calibration inputs."""

    name: str
    """``visual`` or ``text``."""
    run: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    blocks: list[Block] = field(default_factory=list)
    token_positions: Callable[[torch.Tensor], tuple[torch.Tensor | None, torch.Tensor]] | None = None
    """For token encoders: ``data -> (valid [N, L] or None for all, output [N, L])`` boolean masks of
    the tokens that can influence the output at all, and of the output token."""

    @property
    def units(self) -> list[Unit]:
        return [unit for block in self.blocks for unit in block.units]


TOKENS = 1  # batch axis of sequence-first [L, N, D] tensors (the ResNet attention pool's)
ATTENTION_UNITS = {
    "linear": ("q_proj", "k_proj", "v_proj", "core.out_proj"),
    "core": ("q_proj", "k_proj", "v_proj", "core"),
}
"""The units of one attention, by ``recon.attention_unit``."""


def _transformer_blocks(tower: TransformerTower, attention_unit: str) -> list[Block]:
    blocks, axis = [], tower.batch_axis
    for i in range(len(tower.blocks)):
        name, last = f"{tower.prefix}.{i}", i == len(tower.blocks) - 1
        # In the last block only the output token's query, attention row and MLP reach the output;
        # its keys and values still come from every token.
        units = [Unit(f"{name}.attn.{u}", axis, -1, output_token_only=last and u not in ("k_proj", "v_proj"))
                 for u in ATTENTION_UNITS[attention_unit]]
        units += [Unit(f"{name}.mlp.{u}", axis, -1, output_token_only=last) for u in ("c_fc", "c_proj")]
        blocks.append(Block(name, axis, tuple(units)))
    return blocks


def _resnet_blocks(visual: nn.Module, attention_unit: str) -> list[Block]:
    blocks = []
    for layer in ("layer1", "layer2", "layer3", "layer4"):
        for i in range(len(getattr(visual, layer))):
            name = f"visual.{layer}.{i}"
            blocks.append(Block(name, 0, (Unit(name, 0, 1),)))
    if not isinstance(visual.attnpool, QuantAttentionPool2d):
        raise ValueError("the ResNet's attention pool is not quantized; call quantize_clip first")
    units = tuple(Unit(f"visual.attnpool.{u}", TOKENS, -1) for u in ATTENTION_UNITS[attention_unit])
    blocks.append(Block("visual.attnpool", 0, units))
    return blocks


def encoder_plans(model: nn.Module, attention_unit: str = "linear") -> list[EncoderPlan]:
    """The image encoder's plan, then the text encoder's (the order of reconstruction).

    Args:
        model: a quantized CLIP of either family (:func:`~d4c.quantization.quant_clip.quantize_clip`).
        attention_unit: ``linear`` (every quantized Linear of an attention is a unit) or ``core``
            (q/k/v/softmax quantizers and the out projection are one unit); see the module docstring.
    """
    if attention_unit not in ATTENTION_UNITS:
        raise ValueError(f"attention_unit must be one of {', '.join(ATTENTION_UNITS)}, got {attention_unit!r}")
    family = family_of(model)
    if family.image_kind == RESNET:
        visual = EncoderPlan("visual", lambda m, x: m.encode_image(x), _resnet_blocks(model.visual, attention_unit))
    else:
        # Every patch token can reach the output token(s) (the class token, or the patches under average pooling).
        visual = EncoderPlan("visual", lambda m, x: m.encode_image(x),
                             _transformer_blocks(family.image_tower, attention_unit), family.image_token_positions)
    # Causal attention: positions after the output token (CLIP's end-of-text token) never reach it.
    text = EncoderPlan("text", lambda m, x: m.encode_text(x), _transformer_blocks(family.text_tower, attention_unit),
                       family.text_token_positions)
    return [visual, text]
