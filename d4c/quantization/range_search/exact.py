"""The exact MSE range search behind MSEObserver (docs/method.md, "Observers"): the reference's choice, fast.

Same candidates as :func:`~d4c.quantization.range_search.reference.brute_force_search` (1-D:
``num`` thresholds; 2-D: ``num`` widths x every zero point), same float32 error formula, same
rule (the smallest mean error wins, the earlier candidate on exact ties). Instead of one pass over
the data per candidate it evaluates only candidates whose lower bound
(:mod:`~d4c.quantization.range_search.bounds`) can still beat the best error found, cheapest
bound first:

* widths are visited best bound first (rows with a fine histogram: ``HistogramBound``) or
  from the widest down, stopping once the extreme elements alone rule out every narrower window;
* a visited 2-D width costs one binning pass (``BinnedWidth``), which bounds all its zero
  points at once (exact in-range error, Jensen-bounded clipping error);
* the few survivors are evaluated exactly with the reference formula.

Bounds are made safe for float32 rounding (``scale_margin``, :data:`RHO`), so pruning never drops
a candidate that could be chosen; results differ from the reference only on float near-ties.
The bounds need a convex error: ``p >= 1``.
"""

from __future__ import annotations

import torch

from d4c.quantization.qparams import SCALE_EPS, calculate_qparams
from d4c.quantization.range_search.bounds import (BinnedWidth, HistogramBound, PointSummary, bin_classes,
                                                  distance_classes, scale_margin)
from d4c.quantization.range_search.common import (LP_NORM, NUM_CANDIDATES, Problem, mean_errors, per_channel,
                                                  prepare, two_sided_width)

RHO = 1e-5  # relative slack between a float64 bound and the reference's float32 mean error
SEED_CANDIDATES = 4  # zero points given the fine bound to pick a row's first exact evaluation
HIST_CLASS_RATIO = 2.0  # growth of the clipping-distance classes (units of s) of the histogram bound


def histogram_classes(pb: Problem) -> list[float]:
    """Clipping-distance classes for ``HistogramBound`` (distances reach ``num * levels`` steps)."""
    return distance_classes(0.5, HIST_CLASS_RATIO, 2.0 * pb.num * pb.levels)


def exact_mean_errors(xc: torch.Tensor, rows: torch.Tensor, s: torch.Tensor, z: torch.Tensor,
                      pb: Problem) -> torch.Tensor:
    """Mean ``|x - fake_quant(x)|^p`` of candidates ``(s, z)`` on ``rows``: the reference's float32 formula."""
    return mean_errors(xc, s, z, pb.qmin, pb.qmax, pb.p, rows)


class Incumbent:
    """Per row, the best candidate so far: float32 mean error, candidate index, range."""

    def __init__(self, x_min: torch.Tensor, x_max: torch.Tensor):
        self.err = torch.full_like(x_min, float("inf"))
        self.idx = torch.full(x_min.shape, torch.iinfo(torch.int64).max, dtype=torch.int64, device=x_min.device)
        self.lo, self.hi = x_min.clone(), x_max.clone()

    def can_win(self, rows: torch.Tensor, bound_mean: torch.Tensor, idx: torch.Tensor | int,
                candidate: bool = True) -> torch.Tensor:
        """Whether candidates with this safe lower bound on their mean error may still be chosen.

        ``idx``: the candidate's index (``candidate``: the incumbent itself, already evaluated, is
        excluded), or the smallest index of a group of candidates (``candidate=False``).
        """
        best, best_idx = self.err[rows].double(), self.idx[rows]
        below = bound_mean < best
        if candidate:
            below = below & (idx != best_idx)
        return below | ((bound_mean <= best) & (idx < best_idx))

    def offer(self, rows: torch.Tensor, err: torch.Tensor, idx: torch.Tensor, new_min: torch.Tensor,
              new_max: torch.Tensor) -> None:
        """Keep each evaluated candidate that beats its row's best (``rows`` without repeats)."""
        better = (err < self.err[rows]) | ((err == self.err[rows]) & (idx < self.idx[rows]))
        r = rows[better]
        self.err[r], self.idx[r] = err[better], idx[better]
        self.lo[r], self.hi[r] = new_min[better], new_max[better]


def evaluate_in_rounds(xc: torch.Tensor, best: Incumbent, pb: Problem, rows: torch.Tensor, bound: torch.Tensor,
                       cand: dict[str, torch.Tensor], max_rounds: int | None = None) -> None:
    """Evaluate exactly every candidate that can still win: per round, each row's cheapest bound.

    ``bound``: safe lower bounds on the mean errors; ``cand``: flat ``idx``, ``s``, ``z``,
    ``new_min``, ``new_max`` aligned with ``rows``. Equal bounds keep the given order.
    """
    order = torch.argsort(bound, stable=True)
    rows, bound, cand = rows[order], bound[order], {k: v[order] for k, v in cand.items()}
    rounds = 0
    while rows.numel() and (max_rounds is None or rounds < max_rounds):
        rounds += 1
        alive = best.can_win(rows, bound, cand["idx"])
        if not bool(alive.any()):
            return
        rows, bound, cand = rows[alive], bound[alive], {k: v[alive] for k, v in cand.items()}
        first = torch.full_like(best.idx, rows.numel())
        first.scatter_reduce_(0, rows, torch.arange(rows.numel(), device=rows.device), reduce="amin")
        pick = first[first < rows.numel()]
        err = exact_mean_errors(xc, rows[pick], cand["s"][pick], cand["z"][pick], pb)
        best.offer(rows[pick], err, cand["idx"][pick], cand["new_min"][pick], cand["new_max"][pick])
        keep = torch.ones(rows.numel(), dtype=torch.bool, device=rows.device)
        keep[pick] = False
        rows, bound, cand = rows[keep], bound[keep], {k: v[keep] for k, v in cand.items()}


def one_sided_candidates(xrange: torch.Tensor, pb: Problem, side: str) -> dict[str, torch.Tensor]:
    """The reference's 1-D candidates ``[rows, num]``: threshold ``xrange / num * i``, ``i = 1..num``."""
    i = torch.arange(1, pb.num + 1, device=xrange.device, dtype=torch.float32)
    thres = xrange[:, None] / pb.num * i
    new_min = torch.zeros_like(thres) if side == "pos" else -thres
    new_max = torch.zeros_like(thres) if side == "neg" else thres
    s, z = calculate_qparams(new_min, new_max, pb.qmin, pb.qmax, pb.symmetric)
    idx = torch.arange(pb.num, device=xrange.device).expand_as(s)
    return {"idx": idx, "s": s, "z": z, "new_min": new_min, "new_max": new_max}


def two_sided_candidates(xrange: torch.Tensor, i: int | torch.Tensor, pb: Problem) -> dict[str, torch.Tensor]:
    """The reference's 2-D candidates of width ``i``: ``[rows, levels + 1]``, one per zero point
    (``[rows, W, levels + 1]`` for a tensor of ``W`` widths); the same float32 arithmetic."""
    zp = torch.arange(pb.qmin, pb.qmax + 1, device=xrange.device)
    if isinstance(i, torch.Tensor):
        xrange, i = xrange[:, None], i.to(xrange.device)
    tmp_max = (xrange / pb.num * (i.float() if isinstance(i, torch.Tensor) else i))[..., None]
    delta = tmp_max / float(pb.levels)
    new_min = (-zp).float() * delta
    new_max = tmp_max - zp.float() * delta
    s, z = calculate_qparams(new_min, new_max, pb.qmin, pb.qmax, False)
    first = (i - 1) * (pb.levels + 1)
    idx = ((first[:, None] if isinstance(i, torch.Tensor) else first) + zp - pb.qmin).expand_as(s)
    return {"idx": idx, "s": s, "z": z, "new_min": new_min, "new_max": new_max}


def _bounded(bound: torch.Tensor, cand: dict[str, torch.Tensor], s_ref: torch.Tensor, pb: Problem,
             ideal: bool) -> torch.Tensor:
    """A summed-error bound on the ``s_ref`` grid made safe for each candidate, as a mean."""
    reach = torch.maximum((pb.qmin - cand["z"]).abs(), (pb.qmax - cand["z"]).abs()).double() + 1
    return scale_margin(bound * (1 - RHO), cand["s"].double(), s_ref.double(), reach, pb.m, pb.p, ideal) / pb.m


def search_one_sided(xc: torch.Tensor, best: Incumbent, pb: Problem, side: str) -> None:
    """1-D search: every threshold bounded (histogram, or clip error of the extremes), then exact
    evaluation in bound order (widest first among equal bounds) while a bound can win."""
    xrange = torch.maximum(xc.min(1).values.abs(), xc.max(1).values)
    cand = one_sided_candidates(xrange, pb, side)
    rows = torch.arange(xc.shape[0], device=xc.device)[:, None].expand_as(cand["s"])
    bins = pb.histogram_bins()
    if bins:
        hist = HistogramBound(xc, bins, pb.p)
        s64 = cand["s"].double()
        bound = hist.lower_bound(hist.lattice_prefix(s64), rows[:, :, None], s64[:, :, None],
                                 (pb.qmin - cand["z"]).double()[:, :, None],
                                 (pb.qmax - cand["z"]).double()[:, :, None], histogram_classes(pb))[:, :, 0]
        bound = _bounded(bound, cand, cand["s"], pb, ideal=True)
    else:
        lo_edge = ((pb.qmin - cand["z"]) * cand["s"]).double()
        hi_edge = ((pb.qmax - cand["z"]) * cand["s"]).double()
        bound = PointSummary(xc).window_bound(lo_edge, hi_edge, pb.p) * (1 - RHO) / pb.m
    # Clamped scales (tiny ranges) repeat a candidate: equal error, so only the first one can win.
    repeat = (cand["s"][:, 1:] == cand["s"][:, :-1]) & (cand["z"][:, 1:] == cand["z"][:, :-1])
    bound[:, 1:][repeat] = float("inf")
    wide_first = torch.arange(pb.num - 1, -1, -1, device=xc.device)
    evaluate_in_rounds(xc, best, pb, rows[:, wide_first].flatten(), bound[:, wide_first].flatten(),
                       {k: v[:, wide_first].flatten() for k, v in cand.items()})


def _clamped(xc: torch.Tensor, best: Incumbent, pb: Problem, xrange: torch.Tensor) -> None:
    """2-D candidates whose scale is clamped to SCALE_EPS (tiny ranges): equal (scale, zero point)
    means equal error, so only the first candidate of each zero point is evaluated."""
    nz = pb.levels + 1
    suspect = torch.nonzero(xrange / pb.num / pb.levels <= 4 * SCALE_EPS).flatten()
    if suspect.numel() == 0:
        return
    seen = torch.zeros(suspect.numel(), nz, dtype=torch.bool, device=xc.device)
    found = []
    for i in range(1, pb.num + 1):
        cand = two_sided_candidates(xrange[suspect], i, pb)
        clamped = cand["s"] <= SCALE_EPS
        col = torch.where(clamped, (cand["z"] - pb.qmin).long(), 0)
        first = torch.full_like(col, nz)
        pos = torch.arange(nz, device=xc.device).expand_as(col)
        first.scatter_reduce_(1, col, torch.where(clamped, pos, nz), reduce="amin")
        r, zcol = torch.nonzero((first < nz) & ~seen, as_tuple=True)
        seen[r, zcol] = True
        pick = first[r, zcol]
        found.append((suspect[r], {k: v[r, pick] for k, v in cand.items()}))
    rows = torch.cat([f[0] for f in found])
    cand = {k: torch.cat([f[1][k] for f in found]) for k in found[0][1]}
    evaluate_in_rounds(xc, best, pb, rows, torch.zeros_like(cand["idx"], dtype=torch.float64), cand)


def _visit_width(xc: torch.Tensor, extent: tuple[torch.Tensor, torch.Tensor], best: Incumbent, pb: Problem,
                 rows: torch.Tensor, cand: dict[str, torch.Tensor], s_ref: torch.Tensor,
                 pre_bound: torch.Tensor | None) -> None:
    """One binning pass for a width (one per row) and exact evaluation of the zero points that can win.

    ``extent``: every row's min and max; ``cand``: ``[rows, levels + 1]`` candidates; ``pre_bound``:
    their safe mean bounds if already known (histogram), else the pass's coarse bound (one Jensen
    block per side) preselects; survivors get the fine bound (blocks by distance to the edge).
    """
    binned = BinnedWidth(xc if rows.numel() == xc.shape[0] else xc[rows], s_ref, extent[0][rows], extent[1][rows],
                         pb.levels, pb.p)
    lo, hi = pb.qmin - cand["z"], pb.qmax - cand["z"]
    t_lo, t_hi = (lo * s_ref[:, None]).double(), (hi * s_ref[:, None]).double()
    local = torch.arange(rows.numel(), device=xc.device)[:, None].expand_as(lo)
    s_grid = s_ref[:, None].expand_as(lo)

    def fine_bound(sel) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        sub = {k: v[sel] for k, v in cand.items()}
        fine = binned.lower_bound(local[sel], lo[sel], hi[sel], t_lo[sel], t_hi[sel], bin_classes(pb.levels))
        return torch.maximum(_bounded(fine, sub, s_grid[sel], pb, ideal=False), pre_bound[sel]), sub

    if pre_bound is None:
        pre_bound = _bounded(binned.coarse_bound(local, lo, hi, t_lo, t_hi), cand, s_grid, pb, ideal=False)
    pre_bound = torch.where(cand["s"] > SCALE_EPS, pre_bound, float("inf"))  # clamped ones: see _clamped
    grid_rows = rows[:, None].expand_as(lo)
    if not bool(torch.isfinite(best.err[rows]).all()):
        # Seed rows without a best: of their few cheapest coarse bounds, the cheapest fine bound.
        top = pre_bound.topk(min(SEED_CANDIDATES, lo.shape[1]), dim=1, largest=False).indices
        fine, sub = fine_bound((local[:, :top.shape[1]], top))
        pick = (torch.arange(rows.numel(), device=xc.device), fine.argmin(1))
        evaluate_in_rounds(xc, best, pb, rows, fine[pick], {k: v[pick] for k, v in sub.items()}, max_rounds=1)
    sel = torch.nonzero(best.can_win(grid_rows, pre_bound, cand["idx"]), as_tuple=True)
    if sel[0].numel():
        fine, sub = fine_bound(sel)
        evaluate_in_rounds(xc, best, pb, grid_rows[sel], fine, sub)


def search_two_sided(xc: torch.Tensor, best: Incumbent, pb: Problem) -> None:
    """2-D search: widths best histogram bound first (long rows) or widest first, one binning pass
    per visited width, until no remaining width can win."""
    extent = xc.min(1).values, xc.max(1).values
    xrange = two_sided_width(*extent)  # max+ - min-: every range contains 0
    _clamped(xc, best, pb, xrange)
    bins = pb.histogram_bins()
    if bins:
        _widths_by_histogram(xc, extent, best, pb, bins)
        return
    summary = PointSummary(xc)
    active = torch.arange(xc.shape[0], device=xc.device)
    for i in range(pb.num, 0, -1):
        if bool(torch.isfinite(best.err[active]).any()):
            width = (xrange[active] / pb.num * i).double() * (1 + 1e-6)
            bound = summary.sliding_bound(active, width, pb.p) * (1 - RHO) / pb.m
            active = active[best.can_win(active, bound, 0, candidate=False)]  # narrower windows clip more
            if active.numel() == 0:
                return
        cand = two_sided_candidates(xrange[active], i, pb)
        s_ref = cand["s"].amax(1)
        live = s_ref > SCALE_EPS
        if bool(live.any()):
            _visit_width(xc, extent, best, pb, active[live], {k: v[live] for k, v in cand.items()}, s_ref[live], None)


def _widths_by_histogram(xc: torch.Tensor, extent: tuple[torch.Tensor, torch.Tensor], best: Incumbent, pb: Problem,
                         bins: int) -> None:
    """Bound every candidate from a histogram, then visit each row's widths cheapest bound first."""
    hist = HistogramBound(xc, bins, pb.p)
    n_rows, xrange = xc.shape[0], two_sided_width(*extent)
    cand = two_sided_candidates(xrange, torch.arange(1, pb.num + 1), pb)  # [rows, num, levels + 1]
    s_ref = cand["s"].amax(2)
    lattice = hist.lattice_prefix(s_ref.double())
    rows = torch.arange(n_rows, device=xc.device)
    bound = hist.lower_bound(lattice, rows[:, None, None], s_ref.double()[:, :, None],
                             (pb.qmin - cand["z"]).double(), (pb.qmax - cand["z"]).double(), histogram_classes(pb))
    bound = _bounded(bound, cand, s_ref[:, :, None].expand_as(bound), pb, ideal=True)
    bound = torch.where(cand["s"] > SCALE_EPS, bound, float("inf"))
    width_bound = bound.amin(2)
    while True:
        w = width_bound.argmin(1)
        lb = width_bound[rows, w]
        go = torch.isfinite(lb) & best.can_win(rows, lb, w * (pb.levels + 1), candidate=False)
        if not bool(go.any()):
            return
        r, w = rows[go], w[go]
        width_bound[r, w] = float("inf")
        _visit_width(xc, extent, best, pb, r, {k: v[r, w] for k, v in cand.items()}, s_ref[r, w], bound[r, w])


def exact_search(xc: torch.Tensor, pb: Problem, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of ``xc`` the reference's ``(best_min, best_max)``, rows searched in memory-bounded chunks."""
    lows, highs = [], []
    step = pb.rows_per_chunk()
    for r0 in range(0, xc.shape[0], step):
        rows = xc[r0:r0 + step]
        best = Incumbent(rows.min(1).values, rows.max(1).values)
        if pb.symmetric or side != "no":
            search_one_sided(rows, best, pb, side)
        else:
            search_two_sided(rows, best, pb)
        lows.append(best.lo)
        highs.append(best.hi)
    return torch.cat(lows), torch.cat(highs)


@torch.no_grad()
def search_range(x: torch.Tensor, qmin: int, qmax: int, symmetric: bool, ch_axis: int = -1, p: float = LP_NORM,
                 num: int = NUM_CANDIDATES, sidedness: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The MSE-optimal range of the reference grid: what MSEObserver uses.

    Args:
        x: the observed tensor.
        qmin, qmax: the integer grid.
        symmetric: a symmetric grid (1-D search over ``[-t, t]``).
        ch_axis: per-channel along this dimension, or -1 per tensor.
        p: the error's exponent (at least 1: the bounds need convexity).
        num: thresholds (1-D) or widths (2-D) of the grid.
        sidedness: ``pos``, ``neg`` or ``no`` to override the detection from ``x``.

    Returns:
        ``(best_min, best_max)``: scalars, or ``[C]`` vectors along ``ch_axis``; the reference's
        choice up to float32 near-ties (errors equal to ~1e-6 relative).
    """
    if p < 1:
        raise ValueError(f"the exact range search needs p >= 1 (a convex error), got {p}")
    xc, side = prepare(x, ch_axis, sidedness, "search_range")
    best_min, best_max = exact_search(xc, Problem(qmin, qmax, symmetric, p, num, xc.shape[1]), side)
    return per_channel(best_min, best_max, ch_axis)
