"""The total-variation prior every optimising method adds, weight 0.1 (docs/method.md, "What every method shares")."""

from __future__ import annotations

import torch

TV_WEIGHT = 0.1


def total_variation_per_image(images: torch.Tensor) -> torch.Tensor:
    """TV of each image of ``N x C x H x W``: mean squared horizontal plus mean squared vertical difference.

    ``sum (x[..., w+1] - x[..., w])^2 / (C*H*(W-1)) + sum (x[..., h+1, :] - x[..., h, :])^2 / (C*(H-1)*W)``.
    """
    _, c, h, w = images.shape
    horizontal = (images[..., 1:] - images[..., :-1]).square().sum(dim=(1, 2, 3)) / (c * h * (w - 1))
    vertical = (images[..., 1:, :] - images[..., :-1, :]).square().sum(dim=(1, 2, 3)) / (c * (h - 1) * w)
    return horizontal + vertical


def total_variation(images: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """Mean TV over each of ``groups`` equal consecutive mini-batches, summed over the mini-batches.

    With ``groups=1`` this is ``TV(x) = mean_i [...]`` of docs/method.md for one mini-batch.
    """
    return total_variation_per_image(images).view(groups, -1).mean(dim=1).sum()
