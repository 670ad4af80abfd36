"""The pruning bounds of the exact range search are lower bounds of the reference's error (and tight)."""

from __future__ import annotations

import pytest
import torch

from d4c.quantization.range_search.bounds import BinnedWidth, HistogramBound, PointSummary, bin_classes, scale_margin
from d4c.quantization.range_search.common import Problem
from d4c.quantization.range_search.exact import histogram_classes, two_sided_candidates
from d4c.quantization.qparams import fake_quantize

P = 2.4


def _rows(kind: str, rows: int, m: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, m, generator=g)
    if kind == "student":
        x = x / torch.rand(rows, m, generator=g).clamp(min=0.02).sqrt()
    if kind == "gelu":
        x = torch.nn.functional.gelu(2 * x)
    return x


def _exact_sums(xc: torch.Tensor, s: torch.Tensor, z: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Summed reference errors of candidates ``[rows, Z]`` (float32 per element, float64 sum)."""
    x_hat = fake_quantize(xc[:, None, :], s[..., None], z[..., None], qmin, qmax)
    return (xc[:, None, :] - x_hat).abs().pow(P).double().sum(-1)


def _width_candidates(xc: torch.Tensor, bit: int, i: int):
    pb = Problem(0, 2**bit - 1, False, P, 100, xc.shape[1])
    xrange = xc.max(1).values - xc.min(1).values
    return pb, two_sided_candidates(xrange, i, pb)


@pytest.mark.parametrize("kind", ["gauss", "student", "gelu"])
@pytest.mark.parametrize("bit, i", [(4, 60), (4, 100), (8, 85), (8, 30)])
def test_binned_bound_is_below_reference_and_tight(kind, bit, i):
    xc = _rows(kind, 3, 500, seed=bit + i)
    pb, cand = _width_candidates(xc, bit, i)
    s_ref = cand["s"][:, 0]
    binned = BinnedWidth(xc, s_ref, xc.min(1).values, xc.max(1).values, pb.levels, P)
    lo, hi = pb.qmin - cand["z"], pb.qmax - cand["z"]
    rows = torch.arange(3)[:, None]
    t_lo, t_hi = (lo * s_ref[:, None]).double(), (hi * s_ref[:, None]).double()
    same = cand["s"] == s_ref[:, None]  # candidates whose scale is the binning scale
    exact = _exact_sums(xc, cand["s"], cand["z"], pb.qmin, pb.qmax)
    for edges in ([1], bin_classes(pb.levels)):
        bound = binned.lower_bound(rows, lo, hi, t_lo, t_hi, edges)
        assert torch.all(bound[same] <= exact[same] * (1 + 1e-5))
        reach = torch.maximum(lo.abs(), hi.abs()).double() + 1
        safe = scale_margin(bound, cand["s"].double(), s_ref.double()[:, None], reach, 500, P, ideal=False)
        assert torch.all(safe <= exact * (1 + 1e-5))
    best = exact.argmin(1, keepdim=True)  # the fine bound is useful for pruning at the width's best
    assert torch.all(bound.gather(1, best) >= 0.8 * exact.gather(1, best))


def test_binned_bound_exact_when_nothing_is_clipped():
    xc = torch.rand(2, 300, generator=torch.Generator().manual_seed(0)) * 1.8 - 0.4
    s_ref = torch.full((2,), 2.0 / 255)
    z = torch.round(0.5 / s_ref)[:, None]  # window [-0.5, 1.5] covers [-0.4, 1.4]
    lo, hi = 0 - z, 255 - z
    binned = BinnedWidth(xc, s_ref, xc.min(1).values, xc.max(1).values, 255, P)
    bound = binned.lower_bound(torch.arange(2)[:, None], lo, hi, (lo * s_ref[:, None]).double(),
                               (hi * s_ref[:, None]).double(), [1])
    torch.testing.assert_close(bound, _exact_sums(xc, s_ref[:, None], z, 0, 255), rtol=1e-5, atol=0)


@pytest.mark.parametrize("kind", ["gauss", "student", "gelu"])
@pytest.mark.parametrize("bit", [4, 8])
def test_histogram_bound_is_below_reference(kind, bit):
    xc = _rows(kind, 2, 30000, seed=bit)
    hist = HistogramBound(xc, 4096, P)
    pb = Problem(0, 2**bit - 1, False, P, 100, xc.shape[1])
    xrange = xc.max(1).values - xc.min(1).values
    for i in (20, 70, 95, 100):
        cand = two_sided_candidates(xrange, i, pb)
        cols = torch.linspace(0, pb.levels, 12).long()  # a spread of zero points
        s, z = cand["s"][:, cols], cand["z"][:, cols]
        s_ref = s.amax(1, keepdim=True).double()
        lattice = hist.lattice_prefix(s_ref)
        lo, hi = (pb.qmin - z).double(), (pb.qmax - z).double()
        bound = hist.lower_bound(lattice, torch.arange(2)[:, None, None], s_ref[:, :, None], lo[:, None, :],
                                 hi[:, None, :], histogram_classes(pb))[:, 0, :]
        reach = torch.maximum(lo.abs(), hi.abs()) + 1
        safe = scale_margin(bound, s.double(), s_ref.expand_as(bound), reach, xc.shape[1], P, ideal=True)
        exact = _exact_sums(xc, s, z, pb.qmin, pb.qmax)
        assert torch.all(safe <= exact)
        assert torch.all(bound >= 0.5 * exact.amin(1, keepdim=True)) or i == 20  # not vacuous


@pytest.mark.parametrize("kind", ["gauss", "student", "gelu"])
def test_point_summary_bounds_are_below_clip_errors(kind):
    xc = _rows(kind, 4, 700, seed=3)
    summary = PointSummary(xc)
    lo_edge = torch.tensor([[-0.5, -1.0], [-2.0, 0.0], [-0.1, -3.0], [0.0, -1.5]], dtype=torch.float64)
    hi_edge = lo_edge + torch.tensor([[1.0, 2.5]], dtype=torch.float64)
    x = xc.double()[:, None, :]
    clip = ((lo_edge[..., None] - x).clamp(min=0) ** P + (x - hi_edge[..., None]).clamp(min=0) ** P).sum(-1)
    window = summary.window_bound(lo_edge, hi_edge, P)
    assert torch.all(window <= clip * (1 + 1e-9)) and torch.all(window > 0)
    for width in (0.5, 1.5, 3.0):
        w = torch.full((4,), width, dtype=torch.float64)
        starts = torch.linspace(-width, 0, 2001, dtype=torch.float64)  # windows [a, a + width] containing 0
        a = starts[None, :, None]
        sliding_clip = ((a - xc.double()[:, None, :]).clamp(min=0) ** P
                        + (xc.double()[:, None, :] - a - width).clamp(min=0) ** P).sum(-1)
        bound = summary.sliding_bound(torch.arange(4), w, P)
        assert torch.all(bound <= sliding_clip.amin(1) * (1 + 1e-9))
        assert torch.all(bound >= 0.2 * sliding_clip.amin(1))  # not vacuous
