"""The reference range search, a loop over every candidate: the oracle of the tests and benchmarks.

It is the reference implementation's MSEObserver search written as plainly as possible, one
full-tensor pass per candidate (25,600 of them for an 8-bit two-sided tensor), and too slow for
calibration: :func:`~d4c.quantization.range_search.exact.search_range` makes the same choice
fast, and the tests hold it against this loop. :func:`candidate_errors` is one step of the loop
(the benchmark times it to estimate the loop's cost).
"""

from __future__ import annotations

import torch

from d4c.quantization.qparams import calculate_qparams
from d4c.quantization.range_search.common import (LP_NORM, NUM_CANDIDATES, mean_errors, per_channel, prepare,
                                                  two_sided_width)


def candidate_errors(xc: torch.Tensor, new_min: torch.Tensor, new_max: torch.Tensor, qmin: int, qmax: int,
                     symmetric: bool, p: float = LP_NORM) -> torch.Tensor:
    """The mean error of one candidate range per row of ``xc`` (``[C, M]``): the quantity every search minimises."""
    scale, zero_point = calculate_qparams(new_min, new_max, qmin, qmax, symmetric)
    return mean_errors(xc, scale, zero_point, qmin, qmax, p)


@torch.no_grad()
def brute_force_search(x: torch.Tensor, qmin: int, qmax: int, symmetric: bool, ch_axis: int = -1,
                       p: float = LP_NORM, num: int = NUM_CANDIDATES, sidedness: str | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference search: ``(best_min, best_max)``, scalars or one per channel along ``ch_axis``.

    Same arguments as :func:`~d4c.quantization.range_search.exact.search_range` (any ``p``). The
    first candidate with the strictly smallest error wins: ties keep the earlier one.
    """
    xc, side = prepare(x, ch_axis, sidedness, "brute_force_search")
    x_min, x_max = xc.min(1).values, xc.max(1).values
    best_score = torch.full_like(x_min, float("inf"))
    best_min, best_max = x_min.clone(), x_max.clone()

    def consider(new_min: torch.Tensor, new_max: torch.Tensor) -> None:
        score = candidate_errors(xc, new_min, new_max, qmin, qmax, symmetric, p)
        better = score < best_score
        best_score.copy_(torch.where(better, score, best_score))
        best_min.copy_(torch.where(better, new_min, best_min))
        best_max.copy_(torch.where(better, new_max, best_max))

    if symmetric or side != "no":
        xrange = torch.maximum(x_min.abs(), x_max)
        for i in range(1, num + 1):
            thres = xrange / num * i
            new_min = torch.zeros_like(x_min) if side == "pos" else -thres
            new_max = torch.zeros_like(x_max) if side == "neg" else thres
            consider(new_min, new_max)
    else:
        xrange = two_sided_width(x_min, x_max)
        for i in range(1, num + 1):
            tmp_max = xrange / num * i
            delta = tmp_max / float(qmax - qmin)
            for zp in range(qmin, qmax + 1):
                consider(-zp * delta, tmp_max - zp * delta)
    return per_channel(best_min, best_max, ch_axis)
