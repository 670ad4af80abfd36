"""Grids, qparams and fake quantization against torch's own ops."""

from __future__ import annotations

import pytest
import torch

from d4c.quantization.qparams import calculate_qparams, fake_quantize, lp_error, quant_range


@pytest.mark.parametrize("bit", [2, 4, 8, 16])
def test_quant_range(bit):
    assert quant_range(bit, False) == (0, 2**bit - 1)
    assert quant_range(bit, True) == (-(2 ** (bit - 1)), 2 ** (bit - 1) - 1)


@pytest.mark.parametrize("bit, symmetric", [(4, False), (8, False), (4, True), (8, True)])
def test_per_tensor_fake_quant_matches_torch(bit, symmetric):
    torch.manual_seed(0)
    x = torch.randn(1000) * 3 + 0.5
    qmin, qmax = quant_range(bit, symmetric)
    scale, zp = calculate_qparams(x.min(), x.max(), qmin, qmax, symmetric)
    ours = fake_quantize(x, scale, zp, qmin, qmax)
    ref = torch.fake_quantize_per_tensor_affine(x, float(scale), int(zp), qmin, qmax)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)


def test_per_channel_fake_quant_matches_torch():
    torch.manual_seed(0)
    w = torch.randn(6, 5, 3, 3) * torch.linspace(0.1, 2, 6).view(6, 1, 1, 1)
    qmin, qmax = quant_range(4, False)
    mins = w.flatten(1).min(1).values
    maxs = w.flatten(1).max(1).values
    scale, zp = calculate_qparams(mins, maxs, qmin, qmax, False)
    ours = fake_quantize(w, scale, zp, qmin, qmax, ch_axis=0)
    ref = torch.fake_quantize_per_channel_affine(w, scale, zp.to(torch.int32), 0, qmin, qmax)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)


def test_qparams_formula():
    scale, zp = calculate_qparams(torch.tensor(-1.0), torch.tensor(3.0), 0, 255, False)
    assert scale.item() == pytest.approx(4.0 / 255) and zp.item() == round(1.0 / (4.0 / 255))
    # ranges not containing 0 are extended to 0; degenerate ranges keep scale >= 1e-8
    scale, zp = calculate_qparams(torch.tensor(2.0), torch.tensor(3.0), 0, 255, False)
    assert scale.item() == pytest.approx(3.0 / 255) and zp.item() == 0
    scale, _ = calculate_qparams(torch.tensor(0.0), torch.tensor(0.0), 0, 255, False)
    assert scale.item() == pytest.approx(1e-8)
    scale, zp = calculate_qparams(torch.tensor(-4.0), torch.tensor(1.0), -128, 127, True)
    assert scale.item() == pytest.approx(4.0 / 127.5) and zp.item() == 0
