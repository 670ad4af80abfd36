"""What every range search shares: the objective's constants, the input preamble, the grid, the error formula.

The objective is the mean ``|x - fake_quant(x)|^p`` of a candidate range, per tensor or per
channel, evaluated exactly as the reference does it (float32, :func:`mean_errors`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from d4c.errors import D4CError
from d4c.quantization.qparams import channels_first, fake_quantize

LP_NORM = 2.4
"""The p of the L_p error the MSE observers minimise (the reference's)."""
NUM_CANDIDATES = 100
"""Thresholds (1-D) or widths (2-D) of the reference grid."""
SIDES = ("pos", "neg", "no")
EXACT_BLOCK = 1 << 22  # elements per batch of exact evaluations (bounds the memory)
HIST_MAX_BINS = 1 << 13
HIST_ROW_FRACTION = 64  # one histogram bin per this many elements: its bounds cost ~num/64 passes
HIST_BINS_PER_LEVEL = 10  # a histogram helps once its bins are much finer than the grid step
ROW_BUDGET = 1 << 23  # elements per row chunk (data, candidates or bins), bounding the memory


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


def prepare(x: torch.Tensor, ch_axis: int, sidedness: str | None, search: str) -> tuple[torch.Tensor, str]:
    """The rows to search (``[C, M]`` float32, one per channel, or ``[1, M]``) and the data's sidedness.

    ``sidedness`` overrides the detection from ``x`` (an observer fixes it on its first batch).
    """
    if sidedness not in (None, *SIDES):
        raise D4CError(f"must be None, 'pos', 'neg' or 'no', got {sidedness!r}.", "sidedness")
    if x.numel() == 0:
        raise D4CError("got an empty tensor; the MSE range search needs at least one value.", search)
    xc = channels_first(x.detach().float(), ch_axis).contiguous()
    return xc, sidedness or data_sidedness(xc.min(1).values, xc.max(1).values)


def per_channel(best_min: torch.Tensor, best_max: torch.Tensor, ch_axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-row result as the searches return it: scalars per tensor, ``[C]`` vectors per channel."""
    if ch_axis < 0:
        return best_min[0], best_max[0]
    return best_min, best_max


def mean_errors(xc: torch.Tensor, s: torch.Tensor, z: torch.Tensor, qmin: int, qmax: int, p: float,
                rows: torch.Tensor | None = None) -> torch.Tensor:
    """Mean ``|x - fake_quant(x)|^p`` of row ``rows[i]`` (every row when None) at scale ``s[i]``, zero point
    ``z[i]``: the reference's float32 formula, in memory-bounded blocks of rows."""
    rows = torch.arange(xc.shape[0], device=xc.device) if rows is None else rows
    out = torch.empty(rows.numel(), dtype=torch.float32, device=xc.device)
    step = max(1, EXACT_BLOCK // xc.shape[1])
    for j in range(0, rows.numel(), step):
        xb = xc[rows[j:j + step]]
        x_hat = fake_quantize(xb, s[j:j + step, None], z[j:j + step, None], qmin, qmax)
        out[j:j + step] = (xb - x_hat).abs().pow(p).mean(1)
    return out


@dataclass(frozen=True)
class Problem:
    """The grid and search settings shared by every step of one search."""

    qmin: int
    qmax: int
    symmetric: bool
    p: float
    num: int
    m: int  # elements per row

    @property
    def levels(self) -> int:
        return self.qmax - self.qmin

    def rows_per_chunk(self) -> int:
        """Rows searched together: their data, bins and candidates stay within ``ROW_BUDGET``."""
        bins = self.histogram_bins()
        per_row = max(self.m, 4 * (self.levels + 1) * (self.num if bins else 1), self.num * (bins + 1))
        return max(1, ROW_BUDGET // per_row)

    def histogram_bins(self) -> int:
        """Bins of the exact search's per-row histogram bound, or 0 when rows are too short for it to pay off."""
        bins = min(HIST_MAX_BINS, self.m // HIST_ROW_FRACTION)
        return bins if bins >= HIST_BINS_PER_LEVEL * self.levels else 0
