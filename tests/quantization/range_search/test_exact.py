"""The exact range search (MSEObserver) against the reference loop: the same choice on every kind of input."""

from __future__ import annotations

import pytest
import torch

from d4c.errors import D4CError
from d4c.quantization.qparams import quant_range
from d4c.quantization.range_search import brute_force_search, common, golden_section_search, search_range
from tests.quantization.range_search.samples import errors as _errors
from tests.quantization.range_search.samples import sample as _sample


def _assert_same_choice(x, bit, symmetric, ch_axis, **kw):
    qmin, qmax = quant_range(bit, symmetric)
    ref = brute_force_search(x, qmin, qmax, symmetric, ch_axis, **kw)
    got = search_range(x, qmin, qmax, symmetric, ch_axis, **kw)
    for r, g in zip(ref, got):
        assert g.shape == r.shape and g.dtype == torch.float32
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(_errors(x, *got, qmin, qmax, symmetric, ch_axis),
                               _errors(x, *ref, qmin, qmax, symmetric, ch_axis), rtol=1e-6, atol=0)


# Shapes cover per-tensor, weights (ch_axis 0: [out, in] and conv [out, in, kh, kw]), activations
# ([L, N, D], per-channel over the last dim) and channels with very few elements.
CASES = [
    ("gauss", (300,), -1), ("pos", (300,), -1), ("neg", (300,), -1), ("shifted", (300,), -1),
    ("student", (300,), -1), ("outliers", (300,), -1), ("gauss", (6, 40), 0), ("student", (4, 3, 3, 3), 0),
    ("shifted", (5, 4, 6), 2), ("outliers", (7, 3, 5), 2), ("gauss", (9, 3), 0), ("pos", (6, 50), 0),
]


@pytest.mark.parametrize("bit", [2, 4])
@pytest.mark.parametrize("kind, shape, ch_axis", CASES)
def test_matches_reference_asymmetric(bit, kind, shape, ch_axis):
    _assert_same_choice(_sample(kind, shape, seed=bit), bit, False, ch_axis)


@pytest.mark.parametrize("bit", [2, 4, 8])
@pytest.mark.parametrize("kind, shape, ch_axis", [c for c in CASES if c[0] in ("gauss", "student", "pos")])
def test_matches_reference_symmetric(bit, kind, shape, ch_axis):
    _assert_same_choice(_sample(kind, shape, seed=10 + bit), bit, True, ch_axis)


@pytest.mark.parametrize("kind, shape, ch_axis", [("student", (120,), -1), ("shifted", (4, 5, 6), 2),
                                                  ("pos", (400,), -1)])
def test_matches_reference_8bit(kind, shape, ch_axis):
    _assert_same_choice(_sample(kind, shape, seed=3), 8, False, ch_axis)


@pytest.fixture
def histogram_for_short_rows(monkeypatch):
    """Lets rows of a few thousand elements take the histogram path (by default it needs ~64 x more)."""
    monkeypatch.setattr(common, "HIST_ROW_FRACTION", 4)


@pytest.mark.parametrize("bit, kind, shape, ch_axis", [
    (4, "gauss", (3000,), -1), (4, "student", (2, 2400), 0), (4, "shifted", (3000,), -1),
    (2, "outliers", (800,), -1), (4, "pos", (3000,), -1), (4, "relu", (2, 2400), 0),
])
def test_matches_reference_long_rows(bit, kind, shape, ch_axis, histogram_for_short_rows):
    """Rows taking the histogram bound that orders the widths (1-D and 2-D)."""
    assert common.Problem(0, 2**bit - 1, False, 2.4, 100, shape[-1]).histogram_bins() > 0
    _assert_same_choice(_sample(kind, shape, seed=5), bit, False, ch_axis)


def test_matches_reference_long_rows_8bit(histogram_for_short_rows):
    """The 8-bit histogram path, with 6 widths to keep the reference affordable."""
    assert common.Problem(0, 255, False, 2.4, 6, 20480).histogram_bins() > 0
    _assert_same_choice(_sample("student", (20480,), seed=6), 8, False, -1, num=6)


def test_histogram_path_by_default_at_2_bits():
    assert common.Problem(0, 3, False, 2.4, 100, 4000).histogram_bins() > 0
    _assert_same_choice(_sample("shifted", (4000,), seed=14), 2, False, -1)


@pytest.mark.parametrize("sidedness", ["pos", "neg", "no"])
def test_sidedness_override(sidedness):
    """An observer fixes the sidedness on its first batch; later batches may contradict it."""
    x = _sample("shifted", (200,), seed=7)
    _assert_same_choice(x, 4, False, -1, sidedness=sidedness)
    _assert_same_choice(x.abs(), 4, False, -1, sidedness=sidedness)


def test_other_p_and_num():
    _assert_same_choice(_sample("student", (200,), seed=8), 4, False, -1, p=2.0, num=37)
    _assert_same_choice(_sample("gauss", (3, 60), seed=8), 4, False, 0, p=1.0)


def test_a_non_convex_error_is_refused():
    with pytest.raises(ValueError, match="p >= 1"):
        search_range(_sample("gauss", (60,), seed=8), 0, 3, False, p=0.5)


@pytest.mark.parametrize("x", [
    torch.full((50,), 0.7), torch.zeros(40), torch.full((30,), -2.0), torch.tensor([3.5]),
    torch.tensor([-1.0, 2.0]), torch.linspace(-3, 4, 8),  # points exactly on many grids: zero errors tie
    torch.tensor([-1e-9, 2e-9, 0.0, 1e-9]),  # scale clamped to 1e-8 for every candidate
], ids=["const", "zeros", "neg-const", "single", "two", "on-grid", "tiny"])
def test_degenerate_inputs_and_ties(x):
    """Exact ties must go to the earlier candidate, as in the reference loop."""
    for bit, symmetric in [(4, False), (4, True), (2, False)]:
        _assert_same_choice(x, bit, symmetric, -1)


def test_degenerate_channels_and_ties_per_channel():
    x = torch.randn(5, 30)
    x[1] = 0.0  # dead channel in a two-sided tensor: every candidate of that row ties
    x[2] = 1.5
    x[3] = torch.linspace(-1e-9, 3e-9, 30)
    _assert_same_choice(x, 4, False, 0)


def test_huge_dynamic_range():
    x = _sample("gauss", (400,), seed=9) * 1e-6
    x[::50] = torch.tensor([1e6, -3e5, 2e5, 7e5, -1e6, 4e5, 1e3, -2e2])
    _assert_same_choice(x, 4, False, -1)
    _assert_same_choice(x, 8, True, -1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    x = _sample("shifted", (3, 80), seed=11).to(dtype)
    _assert_same_choice(x, 4, False, 0)


@pytest.mark.parametrize("bit", [2, 3, 5, 6, 7, 12, 16])
def test_all_bit_widths_run_and_beat_min_max(bit):
    """Too many candidates for the reference at high bits: check the result against min/max."""
    for x, ch_axis in [(_sample("student", (2000,), seed=bit), -1), (_sample("shifted", (4, 300), seed=bit), 0)]:
        for symmetric in (False, True):
            qmin, qmax = quant_range(bit, symmetric)
            lo, hi = search_range(x, qmin, qmax, symmetric, ch_axis)
            assert torch.isfinite(lo).all() and torch.isfinite(hi).all()
            x_min = x.amin() if ch_axis < 0 else x.amin(1)
            x_max = x.amax() if ch_axis < 0 else x.amax(1)
            ours = _errors(x, lo, hi, qmin, qmax, symmetric, ch_axis)
            plain = _errors(x, x_min, x_max, qmin, qmax, symmetric, ch_axis)
            # min/max is (up to an ulp of its scale) the widest grid candidate; at 12+ bits the
            # float32 rounding of k * scale alone moves errors by ~1e-4 relative.
            assert torch.all(ours <= plain * (1 + (1e-3 if bit >= 12 else 1e-6)))


def test_return_convention():
    x = _sample("gauss", (6, 5, 4), seed=12)
    lo, hi = search_range(x, 0, 15, False)
    assert lo.dim() == 0 and hi.dim() == 0
    lo, hi = search_range(x, 0, 15, False, ch_axis=1)
    assert lo.shape == (5,) and hi.shape == (5,) and torch.all(lo <= hi)
    lo, hi = golden_section_search(x, 0, 15, False, ch_axis=2)
    assert lo.shape == (4,) and hi.shape == (4,)


def test_bad_input_is_one_clear_error():
    with pytest.raises(D4CError, match="sidedness"):
        search_range(torch.randn(10), 0, 15, False, sidedness="both")
    with pytest.raises(D4CError, match="empty"):
        search_range(torch.empty(0), 0, 15, False)
    with pytest.raises(D4CError, match="empty"):
        golden_section_search(torch.empty(0, 3), 0, 15, False, ch_axis=1)


@pytest.mark.cuda
def test_cuda_matches_cpu():
    x = _sample("student", (3, 4000), seed=13)
    for fn in (search_range, golden_section_search):
        cpu = fn(x, 0, 255, False, 0)
        gpu = fn(x.cuda(), 0, 255, False, 0)
        assert gpu[0].is_cuda
        torch.testing.assert_close(gpu[0].cpu(), cpu[0], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(gpu[1].cpu(), cpu[1], rtol=1e-5, atol=1e-7)


def _independent_two_sided_optimum(values, bit: int, p: float = 2.4, num: int = 100) -> float:
    """The smallest mean |v - q(v)|^p over the 2-D grid of one channel, by a plain float64 loop.

    Written from the spec, not from the search code: widths are fractions of ``max+ - min-``
    (the channel's range extended to contain 0), and every zero point of the grid is tried.
    """
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    qmax = 2 ** bit - 1
    width_all = max(v.max(), 0.0) - min(v.min(), 0.0)
    best = np.inf
    for i in range(1, num + 1):
        scale = width_all / num * i / qmax
        for zp in range(0, qmax + 1):
            q = np.clip(np.round(v / scale) + zp, 0, qmax)
            best = min(best, float(np.mean(np.abs(v - (q - zp) * scale) ** p)))
    return best


@pytest.mark.parametrize("bit", [4, 8])
def test_one_sided_channels_of_a_two_sided_tensor_keep_their_extremes(bit):
    # Channel 0 in [0.5, 2.0], channel 1 in [-2.0, -0.5], channel 2 two-sided: the tensor is
    # two-sided (2-D search) while two of its channels lie on one side of 0.
    g = torch.Generator().manual_seed(bit)
    base = torch.rand(3, 200, generator=g)
    x = torch.stack([0.5 + 1.5 * base[0], -0.5 - 1.5 * base[1], 4 * base[2] - 1.5])
    x[0, 0], x[1, 0] = 2.0, -2.0  # the extremes the range must be able to reach
    qmin, qmax = quant_range(bit, False)
    for search in (brute_force_search, search_range):
        lo, hi = search(x, qmin, qmax, False, ch_axis=0)
        got = _errors(x, lo, hi, qmin, qmax, False, 0).double()
        want = torch.tensor([_independent_two_sided_optimum(row.tolist(), bit) for row in x], dtype=torch.float64)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-12)
        # Clipping 2.0 to 1.5 alone would cost 0.5^2.4 / 200 ~ 9.5e-4 per channel: far above the optimum.
        assert float(got[:2].max()) < (0.01 if bit == 4 else 1e-5)
    lo, hi = golden_section_search(x, qmin, qmax, False, ch_axis=0)
    assert float(hi[0]) > 1.9 and float(lo[1]) < -1.9
