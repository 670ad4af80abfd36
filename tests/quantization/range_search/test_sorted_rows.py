"""The sorted-row exact search (weights) against the reference loop, and its clipping bound."""

from __future__ import annotations

import pytest
import torch

from d4c.quantization.qparams import calculate_qparams, channels_first, fake_quantize, lp_error
from d4c.quantization.range_search import brute_force_search, data_sidedness, search_range
from d4c.quantization.range_search.common import Problem
from d4c.quantization.range_search.sorted_rows import extremes_clip_bound, search_rows
from tests.quantization.range_search.samples import sample as _sample


def _rows(kind: str, shape: tuple[int, int], seed: int) -> torch.Tensor:
    x = _sample(kind, shape, seed)
    if kind == "mixed":  # one-sided, constant, zero and tiny rows inside a two-sided tensor
        x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        x[0], x[1], x[2], x[3] = x[0].abs(), -x[1].abs(), 0.0, 1e-9 * x[3]
        x[4] = 0.25
    return x


@pytest.mark.parametrize("bit", [2, 3, 4, 5])
@pytest.mark.parametrize("kind", ["gauss", "student", "outliers", "shifted", "uniform", "mixed"])
def test_sorted_search_makes_the_reference_choice(kind, bit, one_thread):
    x = _rows(kind, (12, 64), seed=bit)
    qmin, qmax = 0, 2**bit - 1
    side = data_sidedness(x.min(1).values, x.max(1).values)
    got = search_rows(x, Problem(qmin, qmax, False, 2.4, 100, x.shape[1]), side)
    ref = brute_force_search(x, qmin, qmax, False, 0)
    fast = search_range(x, qmin, qmax, False, 0)
    for g, r, f in zip(got, ref, fast):
        assert torch.equal(g, f)  # the same choice as the general exact search
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-7)

    def errors(lo, hi):
        s, z = calculate_qparams(lo, hi, qmin, qmax, False)
        return lp_error(x, fake_quantize(x, s, z, qmin, qmax, 0), 2.4, 0)

    torch.testing.assert_close(errors(*got), errors(*ref), rtol=1e-6, atol=0)


def test_rows_of_finer_grids_and_one_sided_rows_take_the_general_search(one_thread):
    x = _sample("pos", (5, 80), 3)
    for bit, side in ((8, "no"), (4, "pos")):
        pb = Problem(0, 2**bit - 1, False, 2.4, 100, 80)
        got = search_rows(x, pb, side)
        ref = search_range(x, 0, 2**bit - 1, False, 0, sidedness=side)
        assert all(torch.equal(g, r) for g, r in zip(got, ref))


def test_the_extremes_bound_never_exceeds_the_clipping_error_of_any_window():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 50, generator=g) * torch.rand(20, 1, generator=g) * 3
    xs = x.sort(1).values.double()
    low, high = xs[:, :8], xs[:, -8:].flip(1)
    width = (xs[:, -1].clamp(min=0) - xs[:, 0].clamp(max=0)) * torch.rand(20, generator=g, dtype=torch.float64)
    bound = extremes_clip_bound(low, high, width, 2.4)
    for frac in torch.linspace(0, 1, 11, dtype=torch.float64):
        a = -width * frac  # every window [a, a + width] that contains 0
        clip = ((a[:, None] - xs).clamp(min=0) ** 2.4 + (xs - a[:, None] - width[:, None]).clamp(min=0) ** 2.4).sum(1)
        assert bool((bound <= clip * (1 + 1e-12) + 1e-12).all())


def test_channels_first_rows_of_conv_weights(one_thread):
    w = _sample("student", (6, 3, 3, 3), 1)
    xc = channels_first(w, 0)
    got = search_rows(xc, Problem(0, 15, False, 2.4, 100, xc.shape[1]), "no")
    ref = search_range(w, 0, 15, False, 0)
    assert all(torch.equal(g, r) for g, r in zip(got, ref))
