"""The GDFQ-style generator: stage sizes for every CLIP resolution, output shape and normalisation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from d4c.generation.methods.enhancing_dfq.generator import ConditionalGenerator, stage_sizes


@pytest.mark.parametrize("resolution, sizes", [
    (32, [8, 16, 32]),                    # GDFQ's CIFAR generator
    (64, [16, 32, 64]),
    (224, [14, 28, 56, 112, 224]),
    (288, [9, 18, 36, 72, 144, 288]),
    (336, [11, 21, 42, 84, 168, 336]),
    (448, [14, 28, 56, 112, 224, 448]),
])
def test_stage_sizes(resolution, sizes):
    assert stage_sizes(resolution) == sizes


def test_gdfq_layout_at_32_px():
    g = ConditionalGenerator(latent_dim=100, resolution=32, width=128)
    convs = [m for m in g.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(128, 128), (128, 64), (64, 3)]
    assert g.project.out_features == 128 * 8 * 8
    assert all(not bn.track_running_stats for bn in g.modules() if isinstance(bn, nn.BatchNorm2d))


@pytest.mark.parametrize("resolution", [32, 64, 80])
def test_images_have_the_resolution_and_are_standardised_per_channel(resolution):
    torch.manual_seed(0)
    g = ConditionalGenerator(latent_dim=16, resolution=resolution, width=8)
    images = g(torch.randn(6, 16))
    assert images.shape == (6, 3, resolution, resolution)
    mean = images.mean(dim=(0, 2, 3))
    var = images.var(dim=(0, 2, 3), unbiased=False)
    assert mean.abs().max() < 1e-5 and (var - 1).abs().max() < 1e-2  # var / (var + eps)
    g.eval()  # batch statistics in eval mode as well: drawing is training's distribution
    assert torch.allclose(g(torch.randn(6, 16)).var(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-2)
