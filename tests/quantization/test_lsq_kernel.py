"""The LSQ kernel as tensor operations against torch's own fake-quantize kernels (values and gradients)."""

from __future__ import annotations

import pytest
import torch

from d4c.quantization.fake_quant import LSQFakeQuantize, LSQPlusFakeQuantize
from d4c.quantization.lsq_kernel import learnable_fake_quantize, torch_learnable_fake_quantize
from d4c.quantization.observers import MinMaxObserver

GRID = [(0, 15), (0, 255), (-8, 7)]


def _inputs(shape, ch_axis, grid, zp_fraction, seed, ties=False):
    gen = torch.Generator().manual_seed(seed)
    qmin, qmax = grid
    x = torch.randn(shape, generator=gen) * 3
    channels = shape[ch_axis] if ch_axis >= 0 else 1
    scale = torch.rand(channels, generator=gen) * 0.5 + 0.05
    zero_point = torch.randint(qmin, qmax + 1, (channels,), generator=gen).float() + zp_fraction
    if ties:  # put a tenth of the values exactly half-way between grid points
        bshape = [1] * len(shape)
        if ch_axis >= 0:
            bshape[ch_axis] = -1
        half = (torch.randint(-20, 20, shape, generator=gen).float() + 0.5) * scale.reshape(bshape)
        x = torch.where(torch.rand(shape, generator=gen) < 0.1, half, x)
    dy = torch.randn(shape, generator=gen)
    return x, scale, zero_point, dy


def _run(fn, x, scale, zero_point, dy, ch_axis, grid, factor=0.0123):
    x, scale, zero_point = (t.clone().requires_grad_(True) for t in (x, scale, zero_point))
    y = fn(x, scale, zero_point, ch_axis, grid[0], grid[1], factor)
    y.backward(dy)
    return y.detach(), x.grad, scale.grad, zero_point.grad


def _close_to_magnitude(ours, theirs, magnitude, rel=1e-5):
    """Equal up to float rounding of a sum whose terms add up to ``magnitude`` in absolute value."""
    assert (ours - theirs).abs().max().item() <= rel * magnitude


@pytest.mark.parametrize("ch_axis", [-1, 0, 2])
@pytest.mark.parametrize("grid", GRID)
@pytest.mark.parametrize("zp_fraction", [0.0, 0.3, 0.5])
def test_values_and_gradients_match_torchs_kernels(ch_axis, grid, zp_fraction):
    x, scale, zero_point, dy = _inputs((16, 9, 33), ch_axis, grid, zp_fraction, seed=abs(ch_axis) + grid[1])
    ours = _run(learnable_fake_quantize, x, scale, zero_point, dy, ch_axis, grid)
    theirs = _run(torch_learnable_fake_quantize, x, scale, zero_point, dy, ch_axis, grid)
    assert torch.equal(ours[0], theirs[0])  # the forward is the same arithmetic, bit for bit
    assert torch.equal(ours[1], theirs[1])  # straight-through input gradient: the same mask
    channels = scale.numel()
    magnitude = (dy.abs().sum() / channels).item() * 0.0123 * (grid[1] - grid[0])
    _close_to_magnitude(ours[2], theirs[2], magnitude)
    _close_to_magnitude(ours[3], theirs[3], magnitude)
    assert ours[2].abs().sum() > 0 and ours[3].abs().sum() > 0  # both branches of the gradient were taken


@pytest.mark.parametrize("ch_axis", [-1, 2])
def test_half_way_values_round_as_torch_does(ch_axis):
    """At ties the forward rounds x / s half to even before adding the zero point, the backward after."""
    x, scale, zero_point, dy = _inputs((8, 10, 24), ch_axis, (0, 15), 0.0, seed=5, ties=True)
    ours = _run(learnable_fake_quantize, x, scale, zero_point, dy, ch_axis, (0, 15))
    theirs = _run(torch_learnable_fake_quantize, x, scale, zero_point, dy, ch_axis, (0, 15))
    assert torch.equal(ours[0], theirs[0])
    # torch's backward kernel computes zp + x / s as one fused multiply-add; on a CPU where it is
    # not fused a tie may fall the other way: allow one element in a thousand.
    assert (ours[1] != theirs[1]).float().mean() <= 1e-3


def test_layout_of_the_input_does_not_matter():
    """Reconstruction feeds sequence-first views ([L, N, D] of batch-first rows): same values and gradients."""
    x, scale, zero_point, dy = _inputs((6, 20, 32), 2, (0, 255), 0.0, seed=7)
    view = x.movedim(0, 1)  # not contiguous
    ours = _run(learnable_fake_quantize, view, scale, zero_point, dy.movedim(0, 1).contiguous(), 2, (0, 255))
    theirs = _run(learnable_fake_quantize, view.contiguous(), scale, zero_point, dy.movedim(0, 1).contiguous(), 2,
                  (0, 255))
    torch.testing.assert_close(ours[0], theirs[0], rtol=0, atol=0)
    torch.testing.assert_close(ours[1], theirs[1], rtol=0, atol=0)
    torch.testing.assert_close(ours[2], theirs[2], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("cls", [LSQFakeQuantize, LSQPlusFakeQuantize])
def test_quantizers_give_the_same_results_with_either_kernel(cls, monkeypatch):
    torch.manual_seed(3)
    x = torch.randn(12, 7, 16) * 2 + 0.3
    results = []
    for kernel in (learnable_fake_quantize, torch_learnable_fake_quantize):
        monkeypatch.setattr(cls, "kernel", staticmethod(kernel))
        q = cls(MinMaxObserver(4, False, 2), 4, False, 2, 16)
        q.observe(x)
        q.fake_quant_enabled = True
        q.scale.requires_grad_(True)
        if q.learnable_zero_point:
            q.zero_point.requires_grad_(True)
        xin = x.clone().requires_grad_(True)
        q(xin).square().sum().backward()
        results.append((q(x).detach(), xin.grad, q.scale.grad))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])
    torch.testing.assert_close(results[0][2], results[1][2], rtol=1e-5, atol=1e-8)


@pytest.mark.cuda
@pytest.mark.parametrize("ch_axis", [-1, 2])
def test_cuda_matches_torchs_cuda_kernels(ch_axis):
    """On CUDA the tensor-operation kernel is the default (torch's per-tensor kernel reads the scale with
    .item(), a host synchronisation): the same grid values and straight-through mask, gradients to rounding."""
    x, scale, zero_point, dy = _inputs((32, 50, 64), ch_axis, (0, 255), 0.0, seed=11)
    x, scale, zero_point, dy = (t.cuda() for t in (x, scale, zero_point, dy))
    ours = _run(learnable_fake_quantize, x, scale, zero_point, dy, ch_axis, (0, 255))
    theirs = _run(torch_learnable_fake_quantize, x, scale, zero_point, dy, ch_axis, (0, 255))
    assert (ours[0] != theirs[0]).float().mean() <= 1e-3  # ties may round the other way
    assert (ours[1] != theirs[1]).float().mean() <= 1e-3
    magnitude = (dy.abs().sum() / scale.numel()).item() * 0.0123 * 255
    _close_to_magnitude(ours[2], theirs[2], magnitude, rel=1e-4)
