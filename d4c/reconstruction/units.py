"""Reconstruction units of a quantized CLIP (SPEC 4.5), grouped by the block they live in.

* ResNet image encoder: every Bottleneck is one unit; in the attention pool, q_proj, k_proj and
  v_proj are single-layer units and so is c_proj together with the attention it follows.
* ViT image encoder and text encoder: every quantized Linear is its own unit: q_proj, k_proj,
  v_proj, the out projection, c_fc, c_proj.

The activation quantizers on the projected q, k, v and on the softmax output belong to the out
projection's unit (:class:`~d4c.quantization.modules.QuantAttentionCore`): its input is the
projected q, k, v, it computes the attention from them, and its loss is measured after the out
projection, the first point where those quantizers' errors show. Each unit also owns the input
quantizer of its layer(s).

Blocks (Bottlenecks, the attention pool, residual attention blocks) are the steps in which cached
inputs advance through the network: a block's units are reconstructed in forward order, then the
cached block input is pushed through the finished block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from clip.model import CLIP, ModifiedResNet
from torch import nn

from d4c.quantization.modules import QuantAttentionPool2d


@dataclass(frozen=True)
class Unit:
    """One reconstruction unit: a sub-module of a block and how its tensors are laid out."""

    name: str
    """Module name in the model (``visual.transformer.resblocks.0.attn.q_proj``)."""
    batch_axis: int
    """Batch dimension of the unit's inputs and output (0 for images, 1 for sequence-first tokens)."""
    channel_dim: int
    """Dimension summed in the loss, in the batch-first layout: conv channels, or token features (-1)."""
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
    run: Callable[[CLIP, torch.Tensor], torch.Tensor]
    blocks: list[Block] = field(default_factory=list)
    token_positions: Callable[[torch.Tensor], tuple[torch.Tensor | None, torch.Tensor]] | None = None
    """For token encoders: ``data -> (valid [N, L] or None for all, output [N, L])`` boolean masks of
    the tokens that can influence the output at all, and of the output token."""

    @property
    def units(self) -> list[Unit]:
        return [unit for block in self.blocks for unit in block.units]


TOKENS = 1  # batch axis of sequence-first [L, N, D] tensors
ATTENTION_UNITS = ("q_proj", "k_proj", "v_proj", "core")


def _transformer_blocks(prefix: str, resblocks: nn.Sequential) -> list[Block]:
    blocks = []
    for i in range(len(resblocks)):
        name, last = f"{prefix}.{i}", i == len(resblocks) - 1
        # In the last block only the output token's query, attention row and MLP reach the output;
        # its keys and values still come from every token.
        units = [Unit(f"{name}.attn.{u}", TOKENS, -1, output_token_only=last and u in ("q_proj", "core"))
                 for u in ATTENTION_UNITS]
        units += [Unit(f"{name}.mlp.{u}", TOKENS, -1, output_token_only=last) for u in ("c_fc", "c_proj")]
        blocks.append(Block(name, TOKENS, tuple(units)))
    return blocks


def _class_token_positions(images: torch.Tensor, length: int) -> tuple[None, torch.Tensor]:
    output = torch.zeros(images.shape[0], length, dtype=torch.bool, device=images.device)
    output[:, 0] = True
    return None, output  # every patch token can reach the class token


def _text_token_positions(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Causal attention: positions after the end-of-text token (the largest id) never reach it.
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    eot = tokens.argmax(dim=-1, keepdim=True)
    return positions <= eot, positions == eot


def _resnet_blocks(visual: ModifiedResNet) -> list[Block]:
    blocks = []
    for layer in ("layer1", "layer2", "layer3", "layer4"):
        for i in range(len(getattr(visual, layer))):
            name = f"visual.{layer}.{i}"
            blocks.append(Block(name, 0, (Unit(name, 0, 1),)))
    if not isinstance(visual.attnpool, QuantAttentionPool2d):
        raise ValueError("the ResNet's attention pool is not quantized; call quantize_clip first")
    units = tuple(Unit(f"visual.attnpool.{u}", TOKENS, -1) for u in ATTENTION_UNITS)
    blocks.append(Block("visual.attnpool", 0, units))
    return blocks


def encoder_plans(model: CLIP) -> list[EncoderPlan]:
    """The image encoder's plan, then the text encoder's (the order of reconstruction)."""
    if isinstance(model.visual, ModifiedResNet):
        visual = EncoderPlan("visual", lambda m, x: m.encode_image(x), _resnet_blocks(model.visual))
    else:
        length = model.visual.positional_embedding.shape[0]
        visual = EncoderPlan("visual", lambda m, x: m.encode_image(x),
                             _transformer_blocks("visual.transformer.resblocks", model.visual.transformer.resblocks),
                             lambda images: _class_token_positions(images, length))
    text = EncoderPlan("text", lambda m, x: m.encode_text(x),
                       _transformer_blocks("transformer.resblocks", model.transformer.resblocks),
                       _text_token_positions)
    return [visual, text]
