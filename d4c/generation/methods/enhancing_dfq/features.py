"""What EnhancingDFQ reads inside the frozen image encoder, through forward hooks.

* **Multi-layer features** ``F^j`` (section 3.3.1) at ``J`` chosen layers, evenly spaced over the
  encoder's levels with the last one included: a ViT's residual blocks (tokens averaged: ``N x
  width``) or a ResNet's four stages ``layer1..layer4`` (globally average-pooled: ``N x C``).
* **The last activation** ``P_a`` (SimLoss_1, section 3.4): the last ViT block's MLP activation
  (QuickGELU, ``L x N x 4 width``) or the last Bottleneck's final ReLU (``N x C x H x W``), each
  image's whole map flattened.

The hooks only read outputs, so the encoder computes what it computes without them; they work on
the quantized model as well (its blocks, stages and activations are the same modules).
"""

from __future__ import annotations

import clip
import torch
from torch import nn

from d4c.errors import D4CError


def levels(visual: nn.Module) -> list[nn.Module]:
    """The modules whose outputs are the encoder's levels: ViT blocks or ResNet stages."""
    if isinstance(visual, clip.model.VisionTransformer):
        return list(visual.transformer.resblocks)
    if isinstance(visual, clip.model.ModifiedResNet):
        return [visual.layer1, visual.layer2, visual.layer3, visual.layer4]
    raise D4CError(f"EnhancingDFQ (--gen_method enhancing_dfq) reads features of CLIP's VisionTransformer or "
                   f"ModifiedResNet image encoders, not of a {type(visual).__name__}.")


def last_activation(visual: nn.Module) -> nn.Module:
    """The encoder's last activation module."""
    if isinstance(visual, clip.model.VisionTransformer):
        return visual.transformer.resblocks[-1].mlp.gelu
    levels(visual)  # raises for unknown encoders
    return visual.layer4[-1].relu3


def chosen_indices(count: int, layers: int) -> list[int]:
    """``layers`` indices evenly spaced over ``count`` levels, the last level included."""
    if not 0 < layers <= count:
        raise D4CError(f"EnhancingDFQ option layers (J = {layers}) must be between 1 and the image encoder's "
                       f"{count} levels.")
    return [round((j + 1) * count / layers) - 1 for j in range(layers)]


def _pooled(output: torch.Tensor, vit: bool) -> torch.Tensor:
    return output.mean(dim=0) if vit else output.mean(dim=(2, 3))


def _flat(output: torch.Tensor, vit: bool) -> torch.Tensor:
    return output.permute(1, 0, 2).flatten(1) if vit else output.flatten(1)


class EncoderTaps:
    """Forward hooks collecting ``F^j`` of the chosen layers and the last activation of each forward."""

    def __init__(self, visual: nn.Module, layers: int):
        self.vit = isinstance(visual, clip.model.VisionTransformer)
        candidates = levels(visual)
        self.indices = chosen_indices(len(candidates), layers)
        self.chosen = [candidates[i] for i in self.indices]
        self.activation = last_activation(visual)
        self.features: list[torch.Tensor | None] = [None] * len(self.chosen)
        self.last: torch.Tensor | None = None
        self._handles: list = []

    def __enter__(self) -> "EncoderTaps":
        self.attach()
        return self

    def __exit__(self, *exc) -> None:
        self.detach()

    def attach(self) -> None:
        self.detach()
        for position, module in enumerate(self.chosen):
            self._handles.append(module.register_forward_hook(
                lambda m, a, out, position=position: self.features.__setitem__(position, _pooled(out, self.vit))))
        self._handles.append(self.activation.register_forward_hook(
            lambda m, a, out: setattr(self, "last", _flat(out, self.vit))))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def feature_dims(self, visual: nn.Module, resolution: int, device: torch.device) -> list[int]:
        """Widths of ``F^j`` (one probe forward of two blank images)."""
        with torch.no_grad(), self:
            visual(torch.zeros(2, 3, resolution, resolution, device=device, dtype=visual_dtype(visual)))
        return [f.shape[1] for f in self.features]


def visual_dtype(visual: nn.Module) -> torch.dtype:
    return next(visual.parameters()).dtype
