"""Magnitude-aware float comparisons for values whose last bits depend on the CPU's kernels.

Matrix products, convolutions and reductions round differently on another CPU, thread count or
torch build, so an elementwise ``atol`` (absolute, blind to the values' size) fails or passes by
accident. These compare the whole tensor by its relative error ``||a - e|| / ||e||`` in float64.
"""

from __future__ import annotations

import torch


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``||actual - expected||_2 / ||expected||_2`` (0 when both are zero)."""
    actual, expected = actual.detach().double(), expected.detach().double()
    norm = expected.norm().item()
    diff = (actual - expected).norm().item()
    return diff / norm if norm > 0 else diff


def assert_relative_close(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-5,
                          what: str = "values") -> None:
    """Same shape and a relative error of at most ``tol``."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    error = relative_error(actual, expected)
    assert error <= tol, f"{what}: relative error {error:.3g} > {tol:g}"
