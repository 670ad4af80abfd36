"""The image generator G: a GDFQ-style conditional convolutional generator at the model's resolution.

Architecture (GDFQ's, Xu et al. 2020, which Qimera and EnhancingDFQ reuse), for an input vector
``h`` (``latent_dim``; GDFQ's ``noise * embedding``, or EnhancingDFQ's ``O^J``):

    Linear(latent_dim -> width * s0 * s0) -> BatchNorm2d(width)
    n x [ nearest upsampling to s_i -> Conv3x3 -> BatchNorm2d -> LeakyReLU(0.2) ]   (width channels,
                                                                                    the last stage width / 2)
    Conv3x3(-> 3) -> Tanh -> BatchNorm2d(3, affine=False)

GDFQ fixes two stages (CIFAR 8 -> 16 -> 32; ImageNet 56 -> 112 -> 224, a 51 M-parameter first
Linear). Here the number of stages ``n`` is the smallest (at least 2) whose start grid
``s0 = ceil(R / 2^n)`` is at most 16 px, and the stage sizes are ``ceil(R / 2^(n - i))``, so the
output is exactly R x R for every CLIP resolution (32 and 64 px of the zoo: GDFQ's two stages;
224: 14 -> 28 -> 56 -> 112 -> 224; 336: 11 -> 21 -> 42 -> 84 -> 168 -> 336) and the first Linear
stays small. The final affine-free BatchNorm gives every channel zero mean and unit variance over
the batch: images in CLIP's normalised pixel space, where real images have about that
statistics. Every BatchNorm uses batch statistics, in training and when drawing
(``track_running_stats=False``), so drawn images come from the distribution trained on.
"""

from __future__ import annotations

import math

import torch
from torch import nn

MAX_START = 16
"""Largest side of the generator's first feature map."""
NEGATIVE_SLOPE = 0.2


def stage_sizes(resolution: int) -> list[int]:
    """Sides of the start grid and of each upsampling stage's output (the last is ``resolution``)."""
    if resolution < 4:
        raise ValueError(f"resolution must be at least 4, got {resolution}")
    stages = 2
    while math.ceil(resolution / 2 ** stages) > MAX_START:
        stages += 1
    return [math.ceil(resolution / 2 ** (stages - i)) for i in range(stages + 1)]


def _batchnorm(channels: int, affine: bool = True) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, affine=affine, track_running_stats=False)


class ConditionalGenerator(nn.Module):
    """``h`` (``N x latent_dim``) -> images ``N x 3 x R x R`` (see the module docstring)."""

    def __init__(self, latent_dim: int, resolution: int, width: int = 128):
        super().__init__()
        self.latent_dim, self.resolution, self.width = latent_dim, resolution, width
        self.sizes = stage_sizes(resolution)
        self.project = nn.Linear(latent_dim, width * self.sizes[0] ** 2)
        self.start = _batchnorm(width)
        channels = [width] * (len(self.sizes) - 1) + [max(width // 2, 1)]
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Upsample(size=(size, size), mode="nearest"),
                          nn.Conv2d(channels[i], channels[i + 1], 3, padding=1),
                          _batchnorm(channels[i + 1]), nn.LeakyReLU(NEGATIVE_SLOPE))
            for i, size in enumerate(self.sizes[1:]))
        self.to_image = nn.Sequential(nn.Conv2d(channels[-1], 3, 3, padding=1), nn.Tanh(), _batchnorm(3, affine=False))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.start(self.project(h).view(h.shape[0], self.width, self.sizes[0], self.sizes[0]))
        for stage in self.stages:
            x = stage(x)
        return self.to_image(x)
