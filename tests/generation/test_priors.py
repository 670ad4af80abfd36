"""The total-variation prior against its formula (docs/method.md), computed independently in NumPy."""

from __future__ import annotations

import numpy as np
import torch

from d4c.generation.priors import total_variation, total_variation_per_image


def _tv_numpy(x: np.ndarray) -> float:
    n, c, h, w = x.shape
    per_image = []
    for i in range(n):
        dw = sum((x[i, ch, r, q + 1] - x[i, ch, r, q]) ** 2 for ch in range(c) for r in range(h) for q in range(w - 1))
        dh = sum((x[i, ch, r + 1, q] - x[i, ch, r, q]) ** 2 for ch in range(c) for r in range(h - 1) for q in range(w))
        per_image.append(dw / (c * h * (w - 1)) + dh / (c * (h - 1) * w))
    return float(np.mean(per_image))


def test_tv_matches_the_formula(generator):
    x = torch.randn(3, 3, 5, 7, generator=generator, dtype=torch.float64)
    assert torch.isclose(total_variation(x), torch.tensor(_tv_numpy(x.numpy()), dtype=torch.float64), rtol=1e-12)


def test_tv_of_a_constant_image_is_zero_and_of_a_ramp_is_known():
    assert total_variation(torch.full((2, 3, 4, 4), 0.7)) == 0
    ramp = torch.arange(6.0).expand(1, 3, 5, 6)  # horizontal steps of 1, no vertical change
    assert torch.isclose(total_variation(ramp), torch.tensor(1.0))


def test_grouped_tv_is_the_sum_of_per_minibatch_means(generator):
    x = torch.randn(6, 3, 8, 8, generator=generator)
    grouped = total_variation(x, groups=3)
    separate = sum(total_variation(x[i:i + 2]) for i in range(0, 6, 2))
    assert torch.isclose(grouped, separate)
    assert torch.allclose(total_variation_per_image(x)[:2].mean(), total_variation(x[:2]))
