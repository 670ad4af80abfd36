"""BNS (ResNet image towers): match BatchNorm running statistics (docs/method.md, "BNS").

A forward pre-hook on every ``BatchNorm2d`` of the image encoder takes the BN input's
per-channel batch mean and biased variance over (N, H, W) and adds
``mean_c (mu - running_mean)^2 + mean_c (var - running_var)^2``; loss = sum over layers + 0.1 TV.
The model stays in eval mode, so the forward itself uses the running statistics as usual.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from d4c.errors import D4CError
from d4c.generation.methods.base import HookedTermsMethod, register
from d4c.generation.settings import GenerationSettings
from d4c.models.family import RESNET, family_of


def batchnorm_layers(model: nn.Module) -> list[nn.BatchNorm2d]:
    """Every BatchNorm2d of the image encoder, in forward order of registration."""
    return [m for m in model.visual.modules() if isinstance(m, nn.BatchNorm2d)]


def channel_statistics(inputs: torch.Tensor, groups: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Per mini-batch, the per-channel mean and biased variance over (N, H, W): two ``groups x C`` tensors.

    Channels-last inputs (the CPU path, :func:`d4c.generation.fastpaths.encode_images`) are a
    ``rows x C`` matrix per mini-batch: mean and centred second moment as two matrix-vector
    products, several times faster on CPUs than ``torch.var_mean`` over three dimensions.
    """
    channels = inputs.shape[1]
    if inputs.is_contiguous(memory_format=torch.channels_last) and not inputs.is_contiguous():
        rows = inputs.permute(0, 2, 3, 1).reshape(groups, -1, channels)  # a view
        weights = rows.new_full((1, rows.shape[1]), 1.0 / rows.shape[1])
        mean = weights @ rows  # groups x 1 x C
        var = weights @ (rows - mean).square()
        return mean.squeeze(1), var.squeeze(1)
    var, mean = torch.var_mean(inputs.unflatten(0, (groups, -1)), dim=(1, 3, 4), unbiased=False)
    return mean, var


def bn_statistics_loss(inputs: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor,
                       groups: int = 1) -> torch.Tensor:
    """``mean_c (mu - running_mean)^2 + mean_c (var - running_var)^2`` per mini-batch, summed over ``groups``."""
    mean, var = channel_statistics(inputs, groups)
    return ((mean - running_mean).square().mean(dim=1) + (var - running_var).square().mean(dim=1)).sum()


@register
class BNS(HookedTermsMethod):
    """BatchNorm-statistics matching, for ModifiedResNet image towers."""

    name = "bns"
    reads_batchnorm_inputs = True

    def __init__(self, model: nn.Module, settings: GenerationSettings, prompts: Sequence[str] | None,
                 device: torch.device) -> None:
        super().__init__(model, settings, prompts, device)
        self.layers = self.hooked = batchnorm_layers(model)

    @classmethod
    def check_model(cls, model: nn.Module) -> None:
        if not batchnorm_layers(model):
            raise D4CError("bns (BNS) needs an image encoder with BatchNorm layers (a ResNet such as RN50), but "
                           "this model's has none: use pse or baseline for a ViT.", "method")

    @classmethod
    def is_baseline_for(cls, model: nn.Module) -> bool:
        return family_of(model).image_kind == RESNET

    def term(self, module: nn.BatchNorm2d, inputs: torch.Tensor, groups: int) -> torch.Tensor:
        return bn_statistics_loss(inputs, module.running_mean, module.running_var, groups)
