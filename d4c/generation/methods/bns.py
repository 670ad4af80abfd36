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


def _statistics_loss(mean: torch.Tensor, var: torch.Tensor, running_mean: torch.Tensor,
                     running_var: torch.Tensor) -> torch.Tensor:
    return ((mean - running_mean).square().mean(dim=1) + (var - running_var).square().mean(dim=1)).sum()


class _StatisticsLoss(torch.autograd.Function):
    """The statistics loss with its input gradient in one pass: ``a + b * x`` per mini-batch and channel.

    With ``R`` values per channel and mini-batch, ``d loss / d x = 2 (mu - running_mean) / (C R) +
    4 (var - running_var) (x - mu) / (C R)``. Autograd through :func:`channel_statistics` builds the
    same gradient from the centred squares, their products and two outer products with the averaging
    vector, each a pass over the (largest, 112 x 112 on RN50) BatchNorm inputs; here it is one
    ``addcmul``. Equal up to float rounding (``tests/generation/test_bns.py``).
    """

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor,
                groups: int) -> torch.Tensor:
        mean, var = channel_statistics(inputs, groups)
        ctx.save_for_backward(inputs, mean, var, running_mean, running_var)
        ctx.groups = groups
        return _statistics_loss(mean, var, running_mean, running_var)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        inputs, mean, var, running_mean, running_var = ctx.saved_tensors
        groups, channels = ctx.groups, inputs.shape[1]
        count = inputs.numel() // (groups * channels)  # values per channel and mini-batch
        slope = grad * 4 * (var - running_var) / (channels * count)  # groups x C
        offset = grad * 2 * (mean - running_mean) / (channels * count) - slope * mean
        shape = (groups, 1, channels, 1, 1)
        grouped = inputs.unflatten(0, (groups, -1))
        # addcmul follows the inputs' memory format (channels last on the CPU path)
        grad_inputs = torch.addcmul(offset.view(shape), grouped, slope.view(shape)).flatten(0, 1)
        return grad_inputs, None, None, None


def bn_statistics_loss(inputs: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor,
                       groups: int = 1) -> torch.Tensor:
    """``mean_c (mu - running_mean)^2 + mean_c (var - running_var)^2`` per mini-batch, summed over ``groups``."""
    if not inputs.requires_grad:
        mean, var = channel_statistics(inputs, groups)
        return _statistics_loss(mean, var, running_mean, running_var)
    return _StatisticsLoss.apply(inputs, running_mean, running_var, groups)


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
    def recipe_fields(cls, settings: GenerationSettings, prompts: Sequence[str] | None) -> dict:
        # 2: the statistics' input gradient in one pass (images differ from 1's by float rounding)
        return {"bns_version": 2}

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
