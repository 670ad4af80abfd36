"""What EnhancingDFQ reads inside the frozen image encoder, through forward hooks.

* **Multi-layer features** ``F^j`` (section 3.3.1) at ``J`` chosen layers, evenly spaced over the
  encoder's levels with the last one included: a ViT's residual blocks (tokens averaged: ``N x
  width``) or a ResNet's four stages ``layer1..layer4`` (globally average-pooled: ``N x C``).
* **The last activation** ``P_a`` (SimLoss_1, section 3.4): the last ViT block's MLP activation
  (``mlp.gelu``: QuickGELU or GELU, ``L x N x 4 width`` in OpenAI's towers, ``N x L x 4 width`` in
  open_clip's) or the last Bottleneck's final ReLU (``relu3`` / ``act3``, ``N x C x H x W``), each
  image's whole map flattened.

Both families (OpenAI's ``clip`` and open_clip) are read through :func:`d4c.models.family.family_of`.

The hooks only read outputs, so the encoder computes what it computes without them; they work on
the quantized model as well (its blocks, stages and activations are the same modules).
"""

from __future__ import annotations

import torch
from torch import nn

from d4c.errors import D4CError
from d4c.models.family import RESNET, VIT, bottleneck_activation, family_of


def _kind(model: nn.Module) -> str:
    kind = family_of(model).image_kind
    if kind not in (VIT, RESNET):
        raise D4CError(f"enhancing_dfq reads features of ViT (VisionTransformer) or ResNet (ModifiedResNet) image "
                       f"encoders, not of a {type(model.visual).__name__}.", "method")
    return kind


def levels(model: nn.Module) -> list[nn.Module]:
    """The modules whose outputs are the image encoder's levels: ViT blocks or ResNet stages."""
    if _kind(model) == VIT:
        return list(family_of(model).image_tower.blocks)
    visual = model.visual
    return [visual.layer1, visual.layer2, visual.layer3, visual.layer4]


def last_activation(model: nn.Module) -> nn.Module:
    """The image encoder's last activation module."""
    if _kind(model) == VIT:
        return family_of(model).image_tower.blocks[-1].mlp.gelu
    return bottleneck_activation(model.visual.layer4[-1], 3)


def chosen_indices(count: int, layers: int) -> list[int]:
    """``layers`` indices evenly spaced over ``count`` levels, the last level included."""
    if not 0 < layers <= count:
        raise D4CError(f"option layers (J = {layers}) must be between 1 and the image encoder's {count} levels.",
                       "edfq")
    return [round((j + 1) * count / layers) - 1 for j in range(layers)]


def _pooled(output: torch.Tensor, token_axis: int | None) -> torch.Tensor:
    return output.mean(dim=token_axis) if token_axis is not None else output.mean(dim=(2, 3))


def _flat(output: torch.Tensor, token_axis: int | None) -> torch.Tensor:
    return output.transpose(0, 1).flatten(1) if token_axis == 0 else output.flatten(1)


class EncoderTaps:
    """Forward hooks collecting ``F^j`` of the chosen layers and the last activation of each forward."""

    def __init__(self, model: nn.Module, layers: int):
        tower = family_of(model).image_tower if _kind(model) == VIT else None
        self.token_axis = None if tower is None else (1 if tower.batch_first else 0)  # ViT tokens: averaged
        candidates = levels(model)
        self.indices = chosen_indices(len(candidates), layers)
        self.chosen = [candidates[i] for i in self.indices]
        self.activation = last_activation(model)
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
                lambda m, a, out, position=position: self.features.__setitem__(position,
                                                                               _pooled(out, self.token_axis))))
        self._handles.append(self.activation.register_forward_hook(
            lambda m, a, out: setattr(self, "last", _flat(out, self.token_axis))))

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
