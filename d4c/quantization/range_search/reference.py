"""The MSE range search of MSEObserver (SPEC 4.2): the reference loop and the search used in calibration.

The objective is the mean ``|x - fake_quant(x)|^p`` (``p = 2.4``) of the candidate range, per
tensor or per channel. Candidates, as in the reference implementation (QDrop's observer):

* **1-D** (one-sided data, or a symmetric grid): ``thres_i = xrange / num * i`` for
  ``i = 1..num`` with ``xrange = max(|min|, max)``; the range is ``[-thres, thres]``, with the
  empty side set to 0 for one-sided data (``[0, thres]`` for non-negative data);
* **2-D** (two-sided data, asymmetric grid): width ``w_i = (max+ - min-) / num * i`` for
  ``i = 1..num`` times every zero point ``zp`` of the grid: ``delta = w_i / (qmax - qmin)``,
  range ``[-zp * delta, w_i - zp * delta]``. For 8 bits that is 100 x 256 = 25,600 candidates.
  ``min- = min(min, 0)`` and ``max+ = max(max, 0)`` per channel (docs/method.md, quantizers): a
  channel whose values all lie on one side of 0 inside a two-sided tensor still gets widths that
  reach its extreme value, since every candidate range contains 0.

The first candidate with the strictly smallest error wins (ties keep the earlier one).
:func:`brute_force_search` is that loop, one full-tensor pass per candidate; it is the
reference every faster search must reproduce. :func:`search_range` is what observers call: the
same choice by branch and bound (:mod:`d4c.quantization.mse_fast`, bounds in
:mod:`d4c.quantization.mse_bounds`), typically a handful of passes instead of 25,600.
:func:`golden_section_search` (MSEFastObserver) minimises the same objective approximately
(:mod:`d4c.quantization.mse_golden`).
"""

from __future__ import annotations

import torch

from d4c.errors import D4CError
from d4c.quantization.mse_fast import Problem, exact_search
from d4c.quantization.mse_golden import golden_ranges
from d4c.quantization.qparams import calculate_qparams, channels_first, fake_quantize

DEFAULT_P = 2.4
DEFAULT_NUM = 100


def data_sidedness(x_min: torch.Tensor, x_max: torch.Tensor) -> str:
    """``'pos'`` for non-negative data, ``'neg'`` for non-positive data, ``'no'`` otherwise."""
    if bool((x_min >= 0).all()):
        return "pos"
    if bool((x_max <= 0).all()):
        return "neg"
    return "no"


def two_sided_width(x_min: torch.Tensor, x_max: torch.Tensor) -> torch.Tensor:
    """``max+ - min-``: the widest 2-D candidate of each channel, its range extended to contain 0."""
    return x_max.clamp(min=0.0) - x_min.clamp(max=0.0)


def _candidate_error(xc: torch.Tensor, new_min: torch.Tensor, new_max: torch.Tensor, qmin: int, qmax: int,
                     symmetric: bool, p: float) -> torch.Tensor:
    scale, zero_point = calculate_qparams(new_min, new_max, qmin, qmax, symmetric)
    x_hat = fake_quantize(xc, scale[:, None], zero_point[:, None], qmin, qmax)
    return (xc - x_hat).abs().pow(p).mean(1)


@torch.no_grad()
def brute_force_search(x: torch.Tensor, qmin: int, qmax: int, symmetric: bool, ch_axis: int = -1,
                       p: float = DEFAULT_P, num: int = DEFAULT_NUM, sidedness: str | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference search: ``(best_min, best_max)``, scalars or one per channel along ``ch_axis``.

    ``sidedness`` overrides the detection from ``x`` (an observer fixes it on its first batch).
    """
    xc = channels_first(x.detach().float(), ch_axis)
    x_min, x_max = xc.min(1).values, xc.max(1).values
    side = sidedness or data_sidedness(x_min, x_max)
    best_score = torch.full_like(x_min, float("inf"))
    best_min, best_max = x_min.clone(), x_max.clone()

    def consider(new_min: torch.Tensor, new_max: torch.Tensor) -> None:
        score = _candidate_error(xc, new_min, new_max, qmin, qmax, symmetric, p)
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

    if ch_axis < 0:
        return best_min[0], best_max[0]
    return best_min, best_max


def _check_sidedness(sidedness: str | None) -> None:
    if sidedness not in (None, "pos", "neg", "no"):
        raise D4CError(f"sidedness must be None, 'pos', 'neg' or 'no', got {sidedness!r}.")


@torch.no_grad()
def search_range(x: torch.Tensor, qmin: int, qmax: int, symmetric: bool, ch_axis: int = -1,
                 p: float = DEFAULT_P, num: int = DEFAULT_NUM, sidedness: str | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The MSE-optimal range observers use; same contract and result as :func:`brute_force_search`.

    Exact branch and bound over the same candidates (see :mod:`d4c.quantization.mse_fast`): the
    chosen range is the reference's up to float32 near-ties (errors equal to ~1e-6 relative).
    Needs ``p >= 1`` (convexity); other ``p`` fall back to the reference loop.
    """
    _check_sidedness(sidedness)
    if x.numel() == 0:
        raise D4CError("search_range got an empty tensor; the MSE range search needs at least one value.")
    xc = channels_first(x.detach().float(), ch_axis).contiguous()
    side = sidedness or data_sidedness(xc.min(1).values, xc.max(1).values)
    if p < 1:
        return brute_force_search(x, qmin, qmax, symmetric, ch_axis, p, num, side)
    best_min, best_max = exact_search(xc, Problem(qmin, qmax, symmetric, p, num, xc.shape[1]), side)
    if ch_axis < 0:
        return best_min[0], best_max[0]
    return best_min, best_max


@torch.no_grad()
def golden_section_search(x: torch.Tensor, qmin: int, qmax: int, symmetric: bool, ch_axis: int = -1,
                          p: float = DEFAULT_P, sidedness: str | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """MSEFastObserver's search: the same objective minimised by bounded scalar searches.

    Approximate by design (see :mod:`d4c.quantization.mse_golden`): golden-section search over
    the threshold (1-D) or the width with an inner zero-point search (2-D), about 20 passes over
    the data; never worse than the plain min/max range. Same contract as :func:`search_range`.
    """
    _check_sidedness(sidedness)
    if x.numel() == 0:
        raise D4CError("golden_section_search got an empty tensor; the MSE range search needs at least one value.")
    xc = channels_first(x.detach().float(), ch_axis).contiguous()
    side = sidedness or data_sidedness(xc.min(1).values, xc.max(1).values)
    best_min, best_max = golden_ranges(xc, Problem(qmin, qmax, symmetric, p, DEFAULT_NUM, xc.shape[1]), side)
    if ch_axis < 0:
        return best_min[0], best_max[0]
    return best_min, best_max
