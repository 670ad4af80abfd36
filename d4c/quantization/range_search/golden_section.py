"""The golden-section range search behind MSEFastObserver (docs/method.md, "Observers"): approximate, fast.

The reference's MSEFastObserver minimises the same L_p objective with nested bounded scalar
searches (scipy's ``minimize_scalar(method='Bounded')``, channel by channel). This one runs
golden-section searches vectorised over channels; it is not bit-identical to the reference's:

* **1-D** (one-sided data, or a symmetric grid): over the threshold ``t`` in ``(0, xrange]``, the
  range being ``[0, t]``, ``[-t, 0]`` or ``[-t, t]`` as in the grid search; each step evaluates
  the objective exactly (one pass);
* **2-D** (two-sided data, asymmetric grid): an outer golden-section search over the width ``w``
  in ``(0, max+ - min-]`` (each channel's range extended to contain 0); for each width an inner
  search over the zero point (the error is convex in it, so a binary search on its forward
  difference finds the minimum) on a binned form of the objective: one binning pass per width
  gives the in-range error exactly and the clipped error by a second-order expansion around each
  bin's mean.

The found range is finally compared (exactly) with the plain min/max range and the better one is
returned, so the result is never worse than min/max. Unlike the exhaustive search it may miss the
grid optimum (unimodality is assumed) but it may also land between grid points.
"""

from __future__ import annotations

import math

import torch

from d4c.quantization.qparams import calculate_qparams
from d4c.quantization.range_search.bounds import BinnedWidth, bin_classes, powp
from d4c.quantization.range_search.common import (LP_NORM, NUM_CANDIDATES, Problem, mean_errors, per_channel,
                                                  prepare, two_sided_width)

GOLDEN_STEPS = 12  # bracket shrinks to 0.618^12 ~ 3e-3 of the range (the grid step is 1e-2)
INV_PHI = (math.sqrt(5) - 1) / 2


def range_errors(xc: torch.Tensor, new_min: torch.Tensor, new_max: torch.Tensor, pb: Problem) -> torch.Tensor:
    """Exact mean error of one range per row (the reference's float32 formula)."""
    s, z = calculate_qparams(new_min, new_max, pb.qmin, pb.qmax, pb.symmetric)
    return mean_errors(xc, s, z, pb.qmin, pb.qmax, pb.p)


def golden_minimize(f, lo: torch.Tensor, hi: torch.Tensor, steps: int = GOLDEN_STEPS):
    """Golden-section search of ``f`` (``[rows] -> (value, extra)``) on ``[lo, hi]`` per row.

    Returns the point with the smallest value seen, its value and its ``extra``.
    """
    c, d = hi - INV_PHI * (hi - lo), lo + INV_PHI * (hi - lo)
    fc, ec = f(c)
    fd, ed = f(d)
    better = fd < fc
    best_x, best_f, best_e = torch.where(better, d, c), torch.minimum(fc, fd), torch.where(better, ed, ec)
    for _ in range(steps):
        left = fc < fd  # the minimum lies in [lo, d]
        hi, lo = torch.where(left, d, hi), torch.where(left, lo, c)
        new = torch.where(left, hi - INV_PHI * (hi - lo), lo + INV_PHI * (hi - lo))
        fn, en = f(new)
        c, d = torch.where(left, new, d), torch.where(left, c, new)
        fc, fd = torch.where(left, fn, fd), torch.where(left, fc, fn)
        ec, ed = torch.where(left, en, ed), torch.where(left, ec, en)
        improved = fn < best_f
        best_x, best_f, best_e = (torch.where(improved, new, best_x), torch.where(improved, fn, best_f),
                                  torch.where(improved, en, best_e))
    return best_x, best_f, best_e


def _one_sided_range(t: torch.Tensor, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    zeros = torch.zeros_like(t)
    return (zeros if side == "pos" else -t), (zeros if side == "neg" else t)


def _binned_error(binned: BinnedWidth, s: torch.Tensor, zp: torch.Tensor, pb: Problem) -> torch.Tensor:
    """Summed error of zero point ``zp`` (per row) at scale ``s``: the in-range part exactly, the
    clipped part by a second-order expansion of ``d^p`` around the mean distance to the clipping
    edge of each block of bins at similar distance (count, sum and sum of squares per block)."""
    rows = torch.arange(s.numel(), device=s.device)
    lo, hi = pb.qmin - zp, pb.qmax - zp
    in_range, low, high = binned.split(rows, lo, hi, bin_classes(pb.levels))
    p = pb.p

    def expansion(block: torch.Tensor, edge: torch.Tensor, sign: float) -> torch.Tensor:
        n, sx, sxx = block[0], block[1], block[3]
        mean = sx / n.clamp(min=1)
        dist = (sign * (edge[..., None] - mean)).clamp(min=0)
        spread = (sxx - sx * mean).clamp(min=0)
        value = n * powp(dist, p) + 0.5 * p * (p - 1) * powp(dist, p - 2) * spread
        return torch.where((n > 0) & (dist > 0), value, 0.0).sum(-1)

    return in_range[2] + expansion(low, (lo * s).double(), 1.0) + expansion(high, (hi * s).double(), -1.0)


def _inner_zero_point(binned: BinnedWidth, s: torch.Tensor, pb: Problem) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the zero point minimising the (convex) binned error: binary search on its forward difference."""
    lo = torch.full_like(s, float(pb.qmin))
    hi = torch.full_like(s, float(pb.qmax))
    for _ in range(max(1, math.ceil(math.log2(pb.levels + 1)))):
        mid = torch.floor((lo + hi) / 2)
        rising = _binned_error(binned, s, mid + 1, pb) >= _binned_error(binned, s, mid, pb)
        active = lo < hi
        hi = torch.where(active & rising, mid, hi)
        lo = torch.where(active & ~rising, mid + 1, lo)
    return _binned_error(binned, s, lo, pb), lo


def _two_sided_range(width: torch.Tensor, zp: torch.Tensor, pb: Problem) -> tuple[torch.Tensor, torch.Tensor]:
    """The range of width ``width`` starting ``zp`` grid steps below 0, as the grid search builds it."""
    delta = width / float(pb.levels)
    return -zp * delta, width - zp * delta


def golden_ranges(xc: torch.Tensor, pb: Problem, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row ``(best_min, best_max)`` of the golden-section search, never worse than min/max;
    rows are searched in memory-bounded chunks."""
    step = pb.rows_per_chunk()
    found = [_golden_rows(xc[r0:r0 + step], pb, side) for r0 in range(0, xc.shape[0], step)]
    return torch.cat([f[0] for f in found]), torch.cat([f[1] for f in found])


def _golden_rows(xc: torch.Tensor, pb: Problem, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    x_min, x_max = xc.min(1).values, xc.max(1).values
    zero = torch.zeros_like(x_min)
    if pb.symmetric or side != "no":
        xrange = torch.maximum(x_min.abs(), x_max)
        t, _, _ = golden_minimize(lambda t: (range_errors(xc, *_one_sided_range(t, side), pb), t), zero, xrange)
        new_min, new_max = _one_sided_range(t, side)
    else:
        def width_error(width: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            s = (width / float(pb.levels)).clamp(min=1e-8)
            binned = BinnedWidth(xc, s, x_min, x_max, pb.levels, pb.p, second_moment=True)
            return _inner_zero_point(binned, s, pb)

        width, _, zp = golden_minimize(width_error, zero, two_sided_width(x_min, x_max))
        new_min, new_max = _two_sided_range(width, zp, pb)
    plain = range_errors(xc, x_min, x_max, pb) <= range_errors(xc, new_min, new_max, pb)
    return torch.where(plain, x_min, new_min), torch.where(plain, x_max, new_max)


@torch.no_grad()
def golden_section_search(x: torch.Tensor, qmin: int, qmax: int, symmetric: bool, ch_axis: int = -1,
                          p: float = LP_NORM, sidedness: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MSEFastObserver's range: the L_p objective minimised by golden-section searches.

    Threshold (1-D) or width with an inner zero-point search (2-D), about 20 passes over the data;
    never worse than the plain min/max range. Same arguments and results' shape as
    :func:`~d4c.quantization.range_search.exact.search_range`.
    """
    xc, side = prepare(x, ch_axis, sidedness, "golden_section_search")
    best_min, best_max = golden_ranges(xc, Problem(qmin, qmax, symmetric, p, NUM_CANDIDATES, xc.shape[1]), side)
    return per_channel(best_min, best_max, ch_axis)
