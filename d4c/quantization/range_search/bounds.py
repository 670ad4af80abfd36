"""Lower bounds on the range-search objective that let the exact search prune candidates unevaluated.

For a candidate with scale ``s`` and zero point ``z`` (clipping bins ``lo = qmin - z``,
``hi = qmax - z``) each element costs at least its distance to the lattice ``s Z`` to the ``p``
(its rounding error) and at least its distance to the window ``[lo s, hi s]`` to the ``p`` (its
clipping error); it costs exactly the first when ``lo <= round(x / s) <= hi`` and the second
otherwise. Both are convex in ``x`` between lattice midpoints, so Jensen's inequality bounds a
group of elements by its count and mean. Three bounds, from cheap to tight:

* :class:`PointSummary`: the clipping error of a row summarised by a few weighted points, for one
  window or for the best window of a given length;
* :class:`HistogramBound` (large rows): a fine value histogram (count and sum per bin) bounds
  every candidate of every width without touching the data again;
* :class:`BinnedWidth` (one pass per width): the data binned by ``round(x / s)``; exact in-range
  error, Jensen-bounded clipping error, for all zero points of a width at once.

All arithmetic is float64; :func:`scale_margin` adds the slack for float32 effects (the reference
rounds ``x * (1/s)`` and ``k * s`` in float32, and a candidate's scale may differ from the
binning scale by an ulp).
"""

from __future__ import annotations

import torch

BLOCK = 1 << 18  # elements per temporary in a pass over the data (stays in cache)
EXTREMES = 8  # most extreme elements per side kept as single points by PointSummary
SUMMARY_BINS = 32  # bins grouping the other elements in PointSummary
FAR_BINS = 1  # BinnedWidth resolves elements up to this many grid lengths beyond the furthest clipping edge
BISECT_STEPS = 8


def powp(t: torch.Tensor, p: float) -> torch.Tensor:
    """``t ** p`` for ``t >= 0`` via exp/log (several times faster than pow on CPU; bounds only)."""
    return torch.exp(torch.log(t) * p)


def jensen(n: torch.Tensor, gap: torch.Tensor, p: float) -> torch.Tensor:
    """``n * (gap / n) ** p``: lower bound on the sum of ``n`` distances to the ``p`` that sum to ``gap``."""
    return torch.where(n > 0, n * powp(gap.abs() / n.clamp(min=1), p), 0.0)


def bin_classes(levels: int) -> list[int]:
    """Distance classes (in bins from the clipping edge) for the binned Jensen bound."""
    edges = [1, 2, 3, 4]
    while edges[-1] < 2 * levels + 3:
        edges.append(int(edges[-1] * 1.5) + 1)
    return edges


def distance_classes(first: float, ratio: float, limit: float) -> list[float]:
    """Class edges ``first, ...`` growing by ``ratio`` (at least +1 step of ``first``) up to ``limit``."""
    edges = [first]
    while edges[-1] < limit:
        edges.append(max(edges[-1] * ratio, edges[-1] + first))
    return edges


class PointSummary:
    """Each row summarised as weighted points for the clip-only bounds.

    The ``EXTREMES`` smallest and largest values are kept as points of weight 1; the values strictly
    between them are grouped in ``SUMMARY_BINS`` equal-width bins, each a point at its mean weighted
    by its count. The clip error ``dist(x, window)^p`` is convex in ``x``, so by Jensen the weighted
    points' clip error is a lower bound on the row's.
    """

    def __init__(self, xc: torch.Tensor, extremes: int = EXTREMES, bins: int = SUMMARY_BINS):
        rows, m = xc.shape
        t = min(extremes, m // 2)
        low = torch.topk(xc, t, dim=1, largest=False).values
        high = torch.topk(xc, t, dim=1, largest=True).values
        if t == 0:
            self.points = torch.zeros(rows, 0, dtype=torch.float64, device=xc.device)
            self.weights = torch.zeros_like(self.points)
            return
        v_lo, v_hi = low[:, -1:], high[:, -1:]
        x0, h = v_lo.double(), ((v_hi - v_lo).double() / bins).clamp(min=1e-30)
        sums = torch.zeros(2, rows * bins, dtype=torch.float64, device=xc.device)
        offsets = (torch.arange(rows, device=xc.device) * bins)[:, None]
        step_r, step_c = max(1, BLOCK // m), min(m, BLOCK)
        for r0 in range(0, rows, step_r):
            for c0 in range(0, m, step_c):
                xb = xc[r0:r0 + step_r, c0:c0 + step_c]
                inside = ((xb > v_lo[r0:r0 + step_r]) & (xb < v_hi[r0:r0 + step_r])).double()
                j = ((xb.double() - x0[r0:r0 + step_r]) / h[r0:r0 + step_r]).floor().clamp(0, bins - 1)
                idx = (j.long() + offsets[r0:r0 + step_r]).flatten()
                sums[0].scatter_add_(0, idx, inside.flatten())
                sums[1].scatter_add_(0, idx, (xb.double() * inside).flatten())
        sums = sums.view(2, rows, bins)
        self.points = torch.cat([low.double(), high.double(), sums[1] / sums[0].clamp(min=1)], 1)
        self.weights = torch.cat([torch.ones(rows, 2 * t, dtype=torch.float64, device=xc.device), sums[0]], 1)

    def window_bound(self, lo_edge: torch.Tensor, hi_edge: torch.Tensor, p: float) -> torch.Tensor:
        """Summed clip error of the points for windows ``[lo_edge, hi_edge]`` (``[rows, W]``, float64)."""
        pts, w = self.points[:, None, :], self.weights[:, None, :]
        out = (lo_edge[..., None] - pts).clamp(min=0) ** p + (pts - hi_edge[..., None]).clamp(min=0) ** p
        return (w * out).sum(-1)

    def sliding_bound(self, rows: torch.Tensor, width: torch.Tensor, p: float) -> torch.Tensor:
        """Lower bound on the points' clip error for any window ``[a, a + width]`` containing 0.

        The error ``f(a)`` is convex in ``a`` (``-width <= a <= 0``; 2-D windows always contain
        0). A float32 bisection on its derivative brackets the minimum in ``[left, right]``; then,
        in float64, ``f`` is at least the larger of its tangents at ``left`` and ``right`` (valid
        however good the bracket), whose minimum over ``[-width, 0]`` is returned.
        """
        pts, w = self.points[rows], self.weights[rows]

        def powers(a: torch.Tensor, pts: torch.Tensor, width: torch.Tensor):
            under = (a[:, None] - pts).clamp(min=0)
            over = (pts - width[:, None] - a[:, None]).clamp(min=0)
            if p == 1:  # powp(0, 0) would be nan
                return under, over, (under > 0).to(under.dtype), (over > 0).to(over.dtype)
            return under, over, powp(under, p - 1), powp(over, p - 1)

        def value_and_slope(a: torch.Tensor, pts: torch.Tensor, w: torch.Tensor, width: torch.Tensor):
            under, over, pu, po = powers(a, pts, width)
            return (w * (pu * under + po * over)).sum(1), p * (w * (pu - po)).sum(1)

        pts32, w32, width32 = pts.float(), w.float(), width.float()
        left, right = -width32, torch.zeros_like(width32)
        for _ in range(BISECT_STEPS):
            mid = (left + right) / 2
            _, _, pu, po = powers(mid, pts32, width32)
            go_right = (w32 * (pu - po)).sum(1) < 0
            left = torch.where(go_right, mid, left)
            right = torch.where(go_right, right, mid)
        left, right = left.double(), right.double()
        f_l, d_l = value_and_slope(left, pts, w, width)
        f_r, d_r = value_and_slope(right, pts, w, width)

        def tangents(a: torch.Tensor) -> torch.Tensor:
            return torch.maximum(f_l + d_l * (a - left), f_r + d_r * (a - right))

        apart = d_l != d_r  # else the tangents are parallel and an end of the interval is the minimum
        kink = (f_r - f_l + d_l * left - d_r * right) / torch.where(apart, d_l - d_r, 1.0)
        kink = torch.where(apart, kink, left).clamp(-width, torch.zeros_like(width))
        low = torch.minimum(torch.minimum(tangents(-width), tangents(torch.zeros_like(width))), tangents(kink))
        return low.clamp(min=0)


def scale_margin(bound: torch.Tensor, s: torch.Tensor, s_ref: torch.Tensor, reach: torch.Tensor, m: int,
                 p: float, ideal: bool) -> torch.Tensor:
    """Turn a bound computed on the grid of scale ``s_ref`` into one valid for the reference's float32
    evaluation at scale ``s`` (all float64, broadcast together).

    Grid point ``j`` (``|j| <= reach``) moves by at most ``delta = reach * (|s - s_ref| + slack)``,
    ``slack = 2^-21 s_ref`` for float32 rounding when the bound used ideal arithmetic (``ideal``) or
    the scales differ, else 0 (the binning pass then saw the reference's exact per-element errors).
    Each element's distance to the grid then drops by at most ``delta`` and, by convexity, its error
    by at most ``p * delta * dist^(p-1)``, where ``dist <= s/2`` in range and ``dist^(p-1) <= dist^p * 2/s``
    when clipped: the sum drops by at most ``2 p delta / s * bound + p * delta * m * (s/2 + delta)^(p-1)``.
    """
    exact = (s == s_ref) & (not ideal)
    delta = reach * ((s - s_ref).abs() + s_ref * 2.0**-21)
    moved = bound * (1 - 2 * p * delta / s_ref) - p * delta * m * (s_ref / 2 + delta) ** (p - 1)
    return torch.where(exact, bound, moved.clamp(min=0))


class HistogramBound:
    """Bounds for every candidate of every width from a fine per-row histogram (large rows only).

    Bin ``j`` of a row holds the count and the sum of the values in ``[x0 + j h, x0 + (j+1) h)``.
    An element's rounding error is at least that of the lattice point nearest to its bin's mean when
    the bin crosses no lattice midpoint (Jensen), else at least the bin's smallest lattice distance;
    bins beyond a clipping edge are grouped by distance to it and bounded by Jensen.
    """

    def __init__(self, xc: torch.Tensor, nbins: int, p: float):
        rows, m = xc.shape
        self.x0 = xc.min(1).values.double()
        self.h = ((xc.max(1).values.double() - self.x0) / nbins).clamp(min=1e-30)
        sums = torch.zeros(2, rows * nbins, dtype=torch.float64, device=xc.device)
        step_r, step_c = max(1, BLOCK // m), min(m, BLOCK)
        offsets = (torch.arange(rows, device=xc.device) * nbins)[:, None]
        for r0 in range(0, rows, step_r):
            for c0 in range(0, m, step_c):
                xb = xc[r0:r0 + step_r, c0:c0 + step_c].double()
                j = ((xb - self.x0[r0:r0 + step_r, None]) / self.h[r0:r0 + step_r, None]).floor()
                idx = (j.clamp(0, nbins - 1).long() + offsets[r0:r0 + step_r]).flatten()
                sums[0].scatter_add_(0, idx, torch.ones_like(xb).flatten())
                sums[1].scatter_add_(0, idx, xb.flatten())
        sums = sums.view(2, rows, nbins)
        self.count, self.mean = sums[0], sums[1] / sums[0].clamp(min=1)
        self.prefix = torch.nn.functional.pad(sums.cumsum(2), (1, 0))  # [2, rows, nbins + 1]
        slop = self.h * 1e-6  # float64 rounding in the bin assignment
        j = torch.arange(nbins, device=xc.device, dtype=torch.float64)
        self.edge_lo = self.x0[:, None] + j * self.h[:, None] - slop[:, None]
        self.edge_hi = self.edge_lo + self.h[:, None] + 2 * slop[:, None]
        self.nbins, self.p = nbins, p

    def lattice_prefix(self, s: torch.Tensor) -> torch.Tensor:
        """Prefix sums over bins of the per-bin rounding-error bounds for scales ``s`` ``[rows, W]``."""
        rows, widths = s.shape
        out = torch.zeros(rows, widths, self.nbins + 1, dtype=torch.float64, device=s.device)
        step = max(1, (1 << 16) // self.nbins)  # widths per chunk: temporaries stay in cache
        for w0 in range(0, widths, step):
            inv = 1.0 / s[:, w0:w0 + step, None]
            a, b = self.edge_lo[:, None, :] * inv, self.edge_hi[:, None, :] * inv
            ra, rb = torch.round(a), torch.round(b)
            # No midpoint inside: Jensen around the common nearest lattice point. A midpoint but no
            # lattice point: the nearer edge. Both: 0.
            dist = torch.where(ra == rb, (self.mean[:, None, :] * inv - ra).abs(),
                               torch.where(torch.ceil(a) <= torch.floor(b), 0.0,
                                           torch.minimum((a - ra).abs(), (b - rb).abs())))
            bound = self.count[:, None, :] * powp(dist, self.p) * inv ** -self.p
            torch.cumsum(bound, 2, out=out[:, w0:w0 + step, 1:])
        return out

    def _below(self, rows: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Number of leading bins lying entirely below ``value``."""
        return ((value - self.x0[rows]) / self.h[rows]).floor().clamp(0, self.nbins).long()

    def _above(self, rows: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Index of the first bin lying entirely above ``value``."""
        return ((value - self.x0[rows]) / self.h[rows]).ceil().clamp(0, self.nbins).long()

    def _block(self, rows: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Count and sum of the values in bins ``[start, end)``."""
        base = rows * (self.nbins + 1)
        end = torch.maximum(start, end)
        count, total = self.prefix[0].flatten(), self.prefix[1].flatten()
        return count.take(base + end) - count.take(base + start), total.take(base + end) - total.take(base + start)

    def lower_bound(self, lattice: torch.Tensor, rows: torch.Tensor, s: torch.Tensor, lo: torch.Tensor,
                    hi: torch.Tensor, classes: list[float]) -> torch.Tensor:
        """Lower bound (ideal arithmetic) on the summed error of candidates ``(s, lo, hi)``.

        ``lattice``: :meth:`lattice_prefix` of the candidates' scales, ``[..., nbins + 1]`` with the
        leading dimensions of ``lo``; ``rows``/``s``/``lo``/``hi`` broadcast together (float64).
        Bins at distance ``[classes[j], classes[j+1]) * s`` beyond an edge form one Jensen block.
        """
        t_lo, t_hi = lo * s, hi * s
        first_in = self._below(rows, t_lo - classes[0] * s)
        end_in = torch.maximum(self._above(rows, t_hi + classes[0] * s), first_in)
        bound = lattice.gather(-1, end_in) - lattice.gather(-1, first_in)
        end_lo, start_hi = first_in, end_in
        for j in range(len(classes)):
            last = j == len(classes) - 1
            start_lo = torch.zeros_like(end_lo) if last else torch.minimum(
                self._below(rows, t_lo - classes[j + 1] * s), end_lo)
            end_hi = torch.full_like(start_hi, self.nbins) if last else torch.maximum(
                self._above(rows, t_hi + classes[j + 1] * s), start_hi)
            n, sx = self._block(rows, start_lo, end_lo)
            bound = bound + jensen(n, n * t_lo - sx, self.p)
            n, sx = self._block(rows, start_hi, end_hi)
            bound = bound + jensen(n, sx - n * t_hi, self.p)
            end_lo, start_hi = start_lo, end_hi
        return bound


class BinnedWidth:
    """The data of some rows binned by ``k = round(x / s)`` for one scale per row (one width).

    Row ``r``'s bins cover ``k`` in ``[kmin[r], kmin[r] + nbins)``: the data's own range of ``k``,
    cut at ``levels + 1 + FAR_BINS`` steps beyond the furthest clipping bins (``lo >= -levels``,
    ``hi <= levels``); the end bins collect everything beyond, which every candidate clips.
    Prefix sums (float64) over the bins of the count, the sum of ``x``, the sum of the rounding
    errors ``|x - k s|^p`` (the reference's float32 ``k s``) and optionally of ``x^2`` sum any
    window of bins in O(1).
    """

    def __init__(self, xc: torch.Tensor, s: torch.Tensor, x_min: torch.Tensor, x_max: torch.Tensor, levels: int,
                 p: float, second_moment: bool = False):
        rows, m = xc.shape
        inv = 1.0 / s  # float32 reciprocal, exactly as fake_quantize computes it
        reach = levels + 1 + FAR_BINS * (levels + 1)
        kmin = torch.round(x_min * inv).clamp(min=-reach)  # k is monotone in x: these are the row's extremes
        kmax = torch.round(x_max * inv).clamp(max=reach)
        nbins = int((kmax - kmin).clamp(min=0).max()) + 1
        sums = torch.zeros(4 if second_moment else 3, rows * nbins, dtype=torch.float64, device=xc.device)
        offsets = (torch.arange(rows, device=xc.device) * nbins)[:, None]
        step_r, step_c = max(1, BLOCK // m), min(m, BLOCK)
        for r0 in range(0, rows, step_r):
            for c0 in range(0, m, step_c):
                xb = xc[r0:r0 + step_r, c0:c0 + step_c]
                inv_b, s_b = inv[r0:r0 + step_r, None], s[r0:r0 + step_r, None]
                k = torch.round(xb * inv_b)
                err = powp((xb - k * s_b).abs() * inv_b, p)  # rounding error in units of s^p
                idx = (k - kmin[r0:r0 + step_r, None]).clamp(0, nbins - 1).long() + offsets[r0:r0 + step_r]
                idx, xd = idx.flatten(), xb.double().flatten()
                sums[0].scatter_add_(0, idx, torch.ones_like(xd))
                sums[1].scatter_add_(0, idx, xd)
                sums[2].scatter_add_(0, idx, err.double().flatten())
                if second_moment:
                    sums[3].scatter_add_(0, idx, xd.square())
        sums = sums.view(-1, rows, nbins)
        sums[2] *= s.double()[:, None] ** p
        self.prefix = torch.nn.functional.pad(sums.cumsum(2), (1, 0))  # [3 or 4, rows, nbins + 1]
        self.table = self.prefix.flatten(1).t().contiguous()  # one row of stats per (row, bin): fast gathers
        self.kmin, self.nbins, self.p = kmin.long(), nbins, p

    def at(self, rows: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Prefix sums ``[3 or 4, ...]`` over bins ``[0, pos)`` of ``rows`` (broadcast with ``pos``)."""
        idx = rows * (self.nbins + 1) + pos.clamp(0, self.nbins)
        return self.table.index_select(0, idx.flatten()).view(*idx.shape, -1).movedim(-1, 0)

    def split(self, rows: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, edges: list[int]):
        """In-range sums and the clipped bins of candidates grouped by distance to the clipping edge.

        ``lo``/``hi``: integer clipping bins (any shape, broadcast with ``rows``). Returns the
        prefix-sum differences ``[stats, ...]`` of the in-range bins, and ``[stats, ..., classes]``
        of the blocks below ``lo`` and above ``hi`` at distance ``[edges[j], edges[j+1])`` bins
        (the last block runs to the end bin).
        """
        kmin = self.kmin[rows]
        b_lo, b_hi = (lo - kmin).long()[..., None], (hi - kmin).long()[..., None] + 1
        e = torch.tensor(edges, device=b_lo.device)
        end = torch.tensor([self.nbins], device=b_lo.device)
        low = self.at(rows[..., None], torch.cat([(b_lo - e + 1), torch.zeros_like(b_lo)], -1))
        high = self.at(rows[..., None], torch.cat([(b_hi + e - 1), end.expand_as(b_hi)], -1))
        in_range = high[..., 0] - low[..., 0]
        return in_range, low[..., :-1] - low[..., 1:], high[..., 1:] - high[..., :-1]

    def coarse_bound(self, rows: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, t_lo: torch.Tensor,
                     t_hi: torch.Tensor) -> torch.Tensor:
        """:meth:`lower_bound` with one Jensen block per clipped side (two gathers per candidate)."""
        kmin = self.kmin[rows]
        below, upto = self.at(rows, (lo - kmin).long()), self.at(rows, (hi - kmin).long() + 1)
        total = self.at(rows, torch.full_like(upto[0], self.nbins, dtype=torch.long))
        n_hi = total[0] - upto[0]
        return upto[2] - below[2] + jensen(below[0], below[0] * t_lo - below[1], self.p) \
            + jensen(n_hi, total[1] - upto[1] - n_hi * t_hi, self.p)

    def lower_bound(self, rows: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, t_lo: torch.Tensor,
                    t_hi: torch.Tensor, edges: list[int]) -> torch.Tensor:
        """Lower bound on the summed error of candidates (any shape, broadcast with ``rows``).

        ``lo``/``hi``: integer clipping bins; ``t_lo``/``t_hi``: the clipping values ``lo*s``, ``hi*s``
        as the reference computes them (float64). The in-range part is exact; each clipped side is
        bounded by Jensen on blocks of bins at distance ``[edges[j], edges[j+1])`` from the edge.
        """
        in_range, low, high = self.split(rows, lo, hi, edges)
        clipped = jensen(low[0], low[0] * t_lo[..., None] - low[1], self.p) \
            + jensen(high[0], high[1] - high[0] * t_hi[..., None], self.p)
        return in_range[2] + clipped.sum(-1)
