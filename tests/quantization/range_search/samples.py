"""Test inputs of the range searches and the objective they minimise, computed directly."""

from __future__ import annotations

import torch

from d4c.quantization.qparams import calculate_qparams, fake_quantize, lp_error


def sample(kind: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Seeded data of one kind: Gaussian, one-sided, skewed, heavy-tailed, with outliers, uniform, ReLU."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    if kind == "pos":
        return x.abs() * 2
    if kind == "neg":
        return -x.abs() - 0.1
    if kind == "shifted":  # two-sided but skewed, like a GELU output
        return torch.nn.functional.gelu(x * 2)
    if kind == "student":  # heavy tails
        return x / torch.rand(shape, generator=g).clamp(min=0.02).sqrt()
    if kind == "outliers":
        x.view(-1)[:: max(1, x.numel() // 3)] *= 25
        return x
    if kind == "uniform":
        return torch.rand(shape, generator=g) * 3 - 1
    if kind == "relu":
        return torch.relu(x)
    return x


def errors(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, qmin: int, qmax: int, symmetric: bool,
           ch_axis: int) -> torch.Tensor:
    """The mean L_2.4 error of fake-quantizing ``x`` with the range ``[lo, hi]`` (per tensor or per channel)."""
    scale, zp = calculate_qparams(lo, hi, qmin, qmax, symmetric)
    return lp_error(x.float(), fake_quantize(x.float(), scale, zp, qmin, qmax, ch_axis), 2.4, ch_axis)
