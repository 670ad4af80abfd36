"""Observers: range statistics across batches, and the MSE observers against the brute-force search."""

from __future__ import annotations

import pytest
import torch

from d4c.quantization.observers import (AvgMinMaxObserver, AvgMSEFastObserver, AvgMSEObserver, MinMaxObserver,
                                        MSEFastObserver, MSEObserver, build_observer)
from d4c.quantization.qparams import calculate_qparams, fake_quantize, lp_error, quant_range
from d4c.quantization.range_search import brute_force_search


def _batches(seed=0, n=3, shape=(20, 6)):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g) * (i + 1) + 0.2 * i for i in range(n)]


def test_minmax_keeps_extremes_and_avg_averages():
    batches = _batches()
    mm, avg = MinMaxObserver(8, False), AvgMinMaxObserver(8, False)
    for b in batches:
        mm(b)
        avg(b)
    assert mm.min_val.item() == pytest.approx(min(b.min().item() for b in batches))
    assert mm.max_val.item() == pytest.approx(max(b.max().item() for b in batches))
    assert avg.min_val.item() == pytest.approx(sum(b.min().item() for b in batches) / 3, rel=1e-6)
    assert avg.max_val.item() == pytest.approx(sum(b.max().item() for b in batches) / 3, rel=1e-6)


def test_per_channel_minmax_and_qparams():
    x = torch.randn(5, 4, 3)
    obs = MinMaxObserver(4, False, ch_axis=1)
    obs(x)
    mins = x.transpose(0, 1).reshape(4, -1).min(1).values
    maxs = x.transpose(0, 1).reshape(4, -1).max(1).values
    torch.testing.assert_close(obs.min_val, mins)
    torch.testing.assert_close(obs.max_val, maxs)
    scale, zp = obs.calculate_qparams()
    ref_scale, ref_zp = calculate_qparams(mins, maxs, 0, 15, False)
    torch.testing.assert_close(scale, ref_scale)
    torch.testing.assert_close(zp, ref_zp)


@pytest.mark.parametrize("cls", [MSEObserver, MSEFastObserver])
@pytest.mark.parametrize("kind", ["one-sided", "two-sided", "per-channel"])
def test_mse_observer_single_batch_equals_brute_force(cls, kind):
    torch.manual_seed(1)
    if kind == "one-sided":
        x, ch_axis = torch.rand(300) ** 2 * 3, -1
    elif kind == "two-sided":
        x, ch_axis = torch.randn(300) * 2 + 0.5, -1
    else:
        x, ch_axis = torch.randn(4, 80) * torch.tensor([[0.5], [1.0], [2.0], [4.0]]), 0
    obs = cls(4, False, ch_axis)
    obs(x)
    ref_min, ref_max = brute_force_search(x, 0, 15, False, ch_axis)
    if cls is MSEObserver:
        torch.testing.assert_close(obs.min_val, ref_min.reshape(-1), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(obs.max_val, ref_max.reshape(-1), rtol=1e-5, atol=1e-6)
    else:
        # approximate: a range about as good as the exhaustive one, and never worse than min/max
        def err(lo, hi):
            scale, zp = calculate_qparams(lo, hi, 0, 15, False)
            return lp_error(x, fake_quantize(x, scale, zp, 0, 15, ch_axis), 2.4, ch_axis)

        lo, hi = obs.min_val.reshape(ref_min.shape), obs.max_val.reshape(ref_max.shape)
        plain_min = x.amin() if ch_axis < 0 else x.amin(1)
        plain_max = x.amax() if ch_axis < 0 else x.amax(1)
        assert torch.all(err(lo, hi) <= err(ref_min, ref_max) * 1.5 + 1e-9)
        assert torch.all(err(lo, hi) <= err(plain_min, plain_max))


def test_mse_observers_combine_batches_like_their_minmax_counterparts():
    batches = _batches(seed=2, n=2, shape=(40,))
    picks = [brute_force_search(b, 0, 7, False) for b in batches]
    mse, avg = MSEObserver(3, False), AvgMSEObserver(3, False)
    for b in batches:
        mse(b)
        avg(b)
    assert mse.min_val.item() == pytest.approx(min(p[0].item() for p in picks), rel=1e-5)
    assert mse.max_val.item() == pytest.approx(max(p[1].item() for p in picks), rel=1e-5)
    assert avg.min_val.item() == pytest.approx(sum(p[0].item() for p in picks) / 2, rel=1e-5)
    assert avg.max_val.item() == pytest.approx(sum(p[1].item() for p in picks) / 2, rel=1e-5)


def test_mse_observer_fixes_sidedness_on_the_first_batch():
    first = torch.rand(50) * 2  # non-negative
    second = torch.randn(50)  # two-sided, searched as one-sided because the first batch was
    obs = MSEObserver(3, False)
    obs(first)
    obs(second)
    assert obs.sidedness == "pos"
    _, expected_max = brute_force_search(second, 0, 7, False, sidedness="pos")
    first_max = brute_force_search(first, 0, 7, False)[1]
    assert obs.max_val.item() == pytest.approx(max(first_max.item(), expected_max.item()), rel=1e-5)
    assert obs.min_val.item() == 0.0


@pytest.mark.parametrize("name", ["MinMaxObserver", "AvgMinMaxObserver", "MSEObserver", "AvgMSEObserver",
                                  "MSEFastObserver", "AvgMSEFastObserver"])
def test_every_observer_builds_and_produces_valid_qparams(name):
    obs = build_observer(name, 4, True, ch_axis=0)
    obs(torch.randn(3, 30))
    scale, zp = obs.calculate_qparams()
    assert scale.shape == (3,) and torch.all(scale > 0) and torch.all(zp == 0)
    assert quant_range(4, True) == (obs.qmin, obs.qmax)
    assert type(obs).__name__ == name


def test_unobserved_observer_refuses_qparams():
    with pytest.raises(RuntimeError):
        AvgMSEFastObserver(8, False).calculate_qparams()
