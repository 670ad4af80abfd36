"""Grids, qparams and fake quantization against torch's own ops; the reference MSE loop against NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from d4c.quantization.mse_search import brute_force_search
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


def _numpy_search(x: np.ndarray, qmin: int, qmax: int, p: float = 2.4, num: int = 100):
    """An independent NumPy re-implementation of the 2-D loop for two-sided data (float64)."""
    best = (np.inf, None, None)
    xrange = x.max() - x.min()
    for i in range(1, num + 1):
        width = xrange / num * i
        delta = width / (qmax - qmin)
        for zp in range(qmin, qmax + 1):
            lo, hi = -zp * delta, width - zp * delta
            scale = max((hi - lo) / (qmax - qmin), 1e-8)
            z = np.clip(qmin - np.round(lo / scale), qmin, qmax)
            q = np.clip(np.round(x * (1.0 / scale)) + z, qmin, qmax)
            err = np.mean(np.abs(x - (q - z) * scale) ** p)
            if err < best[0]:
                best = (err, lo, hi)
    return best


def test_reference_loop_agrees_with_numpy():
    rng = np.random.RandomState(0)
    x = (rng.randn(300) * 2 + 0.3).astype(np.float32)
    best_min, best_max = brute_force_search(torch.from_numpy(x), 0, 15, False)
    err, lo, hi = _numpy_search(x.astype(np.float64), 0, 15)
    assert best_min.item() == pytest.approx(lo, rel=1e-5) and best_max.item() == pytest.approx(hi, rel=1e-5)
    scale, zp = calculate_qparams(best_min, best_max, 0, 15, False)
    ours = lp_error(torch.from_numpy(x), fake_quantize(torch.from_numpy(x), scale, zp, 0, 15), 2.4)
    assert ours.item() == pytest.approx(err, rel=1e-4)


def test_reference_loop_one_sided_and_per_channel():
    torch.manual_seed(1)
    x = torch.rand(4, 50) * torch.tensor([[1.0], [2.0], [0.5], [3.0]])
    best_min, best_max = brute_force_search(x, 0, 15, False, ch_axis=0)
    assert best_min.shape == (4,) and torch.all(best_min == 0)
    for c in range(4):  # each channel's pick is the best of its 100 thresholds
        cand = [x[c].max() / 100 * i for i in range(1, 101)]
        errs = []
        for t in cand:
            s, z = calculate_qparams(torch.tensor(0.0), t, 0, 15, False)
            errs.append(lp_error(x[c], fake_quantize(x[c], s, z, 0, 15), 2.4).item())
        assert best_max[c].item() == pytest.approx(cand[int(np.argmin(errs))].item())
