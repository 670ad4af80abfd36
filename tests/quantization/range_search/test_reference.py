"""The reference range search (the oracle of the other searches' tests) against an independent NumPy loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from d4c.quantization.qparams import calculate_qparams, fake_quantize, lp_error
from d4c.quantization.range_search import brute_force_search, candidate_errors


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


def test_candidate_errors_are_the_mean_lp_error_of_each_row():
    x = torch.randn(3, 40, generator=torch.Generator().manual_seed(2))
    lo, hi = torch.tensor([-1.0, -0.5, 0.0]), torch.tensor([1.0, 2.0, 0.7])
    got = candidate_errors(x, lo, hi, 0, 15, False)
    for c in range(3):
        scale, zp = calculate_qparams(lo[c], hi[c], 0, 15, False)
        want = np.mean(np.abs(x[c].double().numpy() - fake_quantize(x[c], scale, zp, 0, 15).double().numpy()) ** 2.4)
        assert got[c].item() == pytest.approx(want, rel=1e-5)
