"""Fake quantizers against torch's fake-quantize ops; LSQ/LSQ+ gradients against finite differences; AdaRound."""

from __future__ import annotations

import math

import pytest
import torch

from d4c.quantization.fake_quant import (GAMMA, ZETA, AdaRoundFakeQuantize, FixedFakeQuantize, LSQFakeQuantize,
                                         LSQPlusFakeQuantize, build_quantizer)
from d4c.quantization.observers import MinMaxObserver
from d4c.quantization.quantizer_config import QuantizerConfig
from d4c.quantization.qparams import calculate_qparams, quant_range

QUANTIZERS = [FixedFakeQuantize, LSQFakeQuantize, LSQPlusFakeQuantize, AdaRoundFakeQuantize]


def _calibrated(cls, x, bit, symmetric, ch_axis=-1):
    channels = x.shape[ch_axis] if ch_axis >= 0 else 1
    q = cls(MinMaxObserver(bit, symmetric, ch_axis), bit, symmetric, ch_axis, channels)
    q.observer_enabled = True
    q(x)
    q.observer_enabled, q.fake_quant_enabled = False, True
    return q


@pytest.mark.parametrize("cls", QUANTIZERS)
@pytest.mark.parametrize("bit, symmetric", [(4, False), (8, False), (4, True), (8, True)])
def test_per_tensor_matches_torch(cls, bit, symmetric):
    torch.manual_seed(0)
    x = torch.randn(64, 33) * 2 + 0.3
    q = _calibrated(cls, x, bit, symmetric)
    qmin, qmax = quant_range(bit, symmetric)
    scale, zp = calculate_qparams(x.min(), x.max(), qmin, qmax, symmetric)
    expected = torch.fake_quantize_per_tensor_affine(x, float(scale), int(zp), qmin, qmax)
    with torch.no_grad():
        torch.testing.assert_close(q(x), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cls", QUANTIZERS)
@pytest.mark.parametrize("ch_axis", [0, 2])
def test_per_channel_matches_torch(cls, ch_axis):
    torch.manual_seed(1)
    x = torch.randn(6, 5, 7) * torch.linspace(0.2, 3, 7) + 0.1
    if ch_axis == 0:
        x = x * torch.linspace(0.5, 2, 6).view(6, 1, 1)
    q = _calibrated(cls, x, 4, False, ch_axis)
    qmin, qmax = quant_range(4, False)
    xc = x.movedim(ch_axis, 0).reshape(x.shape[ch_axis], -1)
    scale, zp = calculate_qparams(xc.min(1).values, xc.max(1).values, qmin, qmax, False)
    expected = torch.fake_quantize_per_channel_affine(x, scale, zp.to(torch.int32), ch_axis, qmin, qmax)
    with torch.no_grad():
        torch.testing.assert_close(q(x), expected, rtol=0, atol=1e-6)


def test_disabled_quantizer_is_identity_and_observer_only_watches():
    x = torch.randn(10, 4)
    q = build_quantizer(QuantizerConfig("LSQFakeQuantize", "MinMaxObserver", 4, False, -1))
    assert q(x) is x
    q.observer_enabled = True
    assert q(x) is x
    assert q.scale.item() == pytest.approx((x.max() - min(x.min(), 0)).item() / 15, rel=1e-6)


def _surrogate(x, scale, zero_point, qmin, qmax, c, inside, c_zp=0.0):
    """LSQ's straight-through surrogate, with everything piecewise constant frozen at the evaluation point.

    ``round(v)`` becomes ``v + c`` (``c`` fixed) and so does the rounding of the zero point
    (``c_zp``); which elements are clipped (``inside``) is fixed too, so the finite differences
    never straddle a kink of the clamp.
    """
    zp = zero_point + c_zp
    integer = torch.where(inside, x / scale + c + zp, torch.clamp(x / scale + c + zp, qmin, qmax).round())
    return (integer - zp) * scale


def _inside(x, scale, zero_point, qmin, qmax):
    v = torch.round(x / scale) + torch.round(zero_point)
    return (v >= qmin) & (v <= qmax)


@pytest.mark.parametrize("ch_axis", [-1, 1])
def test_lsq_gradients_match_finite_differences_of_the_surrogate(ch_axis):
    torch.manual_seed(2)
    x = (torch.randn(8, 3) * 1.5 + 0.2).double()
    channels = 3 if ch_axis >= 0 else 1
    q = LSQFakeQuantize(MinMaxObserver(4, False, ch_axis), 4, False, ch_axis, channels)
    q.observe(x.float())
    q.fake_quant_enabled = True
    with torch.no_grad():
        q.scale.mul_(0.8)  # clip some values so both branches of the gradient are exercised
    q.scale.requires_grad_(True)
    weights = torch.randn(8, 3).double()
    x_in = x.float().clone().requires_grad_(True)
    (q(x_in).double() * weights).sum().backward()

    qmin, qmax = q.qmin, q.qmax
    shape = (1, -1) if ch_axis >= 0 else (1, 1)
    s = q.scale.detach().double().view(shape)
    zp = q.zero_point.detach().double().view(shape)
    c = torch.round(x / s) - x / s
    inside = _inside(x, s, zp, qmin, qmax)
    eps = 1e-6
    factor = 1.0 / math.sqrt(x.numel() / channels * qmax)
    for k in range(channels):
        step = torch.zeros_like(s).reshape(-1)
        step[k] = eps
        step = step.view(shape)
        plus = (_surrogate(x, s + step, zp, qmin, qmax, c, inside) * weights).sum()
        minus = (_surrogate(x, s - step, zp, qmin, qmax, c, inside) * weights).sum()
        fd = (plus - minus) / (2 * eps) * factor
        assert q.scale.grad[k].item() == pytest.approx(fd.item(), rel=1e-3, abs=1e-6)
    torch.testing.assert_close(x_in.grad.double(), weights * inside)


def test_lsq_plus_zero_point_gradient_matches_finite_differences():
    torch.manual_seed(3)
    x = (torch.randn(50) * 2).double()
    q = LSQPlusFakeQuantize(MinMaxObserver(4, False), 4, False)
    q.observe(x.float())
    q.fake_quant_enabled = True
    with torch.no_grad():
        q.scale.mul_(0.7)
        q.zero_point.add_(0.3)  # a non-integer zero point: rounded inside, straight-through outside
    q.scale.requires_grad_(True)
    q.zero_point.requires_grad_(True)
    weights = torch.randn(50).double()
    (q(x.float()).double() * weights).sum().backward()
    s, zp = q.scale.detach().double(), q.zero_point.detach().double()
    c, c_zp = torch.round(x / s) - x / s, torch.round(zp) - zp
    inside = _inside(x, s, zp, q.qmin, q.qmax)
    assert (~inside).any() and inside.any()
    factor = 1.0 / math.sqrt(x.numel() * q.qmax)
    eps = 1e-6
    for param, grad in ((s, q.scale.grad), (zp, q.zero_point.grad)):
        def value(delta):
            ss = s + delta if param is s else s
            zz = zp + delta if param is zp else zp
            return (_surrogate(x, ss, zz, q.qmin, q.qmax, c, inside, c_zp) * weights).sum()
        fd = (value(eps) - value(-eps)) / (2 * eps) * factor
        assert grad.item() == pytest.approx(fd.item(), rel=1e-3, abs=1e-6)
    assert q.zero_point.grad.abs().item() > 0


def test_adaround_init_is_round_to_nearest_and_soft_value_is_exact():
    torch.manual_seed(4)
    w = torch.randn(6, 10) * 0.3
    q = _calibrated(AdaRoundFakeQuantize, w, 4, False, ch_axis=0)
    nearest = q(w).clone()
    q.init_alpha(w)
    # h(alpha) is the fractional part: the soft weight is w itself (up to clamping at the grid edges)
    scale = q.scale.view(-1, 1)
    integer = torch.floor(w / scale) + q.h() + q.zero_point.view(-1, 1)
    inside = (integer >= q.qmin) & (integer <= q.qmax)
    torch.testing.assert_close(q(w)[inside], w[inside], rtol=0, atol=1e-6)
    # hard rounding at initialisation reproduces round-to-nearest
    hardened = w.clone()
    q.harden(hardened)
    torch.testing.assert_close(hardened, nearest, rtol=0, atol=1e-6)
    assert not q.soft and q.alpha is None


def test_adaround_hardening_lands_on_the_grid():
    torch.manual_seed(5)
    w = torch.randn(4, 3, 3, 3)
    q = _calibrated(AdaRoundFakeQuantize, w, 3, False, ch_axis=0)
    q.init_alpha(w)
    with torch.no_grad():
        q.alpha.add_(torch.randn_like(q.alpha) * 3)  # learned rounding that differs from nearest
    h = q.h()
    assert (h > 0).any() and (h < 1).any()
    soft_up = (q.alpha >= 0).float()
    hardened = w.clone()
    q.harden(hardened)
    scale, zp = q.scale.view(-1, 1, 1, 1), q.zero_point.view(-1, 1, 1, 1)
    integers = hardened / scale + zp
    torch.testing.assert_close(integers, integers.round(), rtol=0, atol=1e-4)
    assert integers.min() >= q.qmin - 1e-4 and integers.max() <= q.qmax + 1e-4
    expected = torch.clamp(torch.floor(w / scale) + soft_up + zp, q.qmin, q.qmax)
    torch.testing.assert_close(integers.round(), expected)
    # after hardening the quantizer leaves the on-grid weight unchanged
    torch.testing.assert_close(q(hardened), hardened, rtol=0, atol=1e-6)


def test_adaround_rectified_sigmoid_and_rounding_loss():
    q = AdaRoundFakeQuantize(MinMaxObserver(4, False), 4, False)
    q.alpha = torch.nn.Parameter(torch.tensor([-10.0, 0.0, 10.0]))
    h = q.h()
    torch.testing.assert_close(h, torch.tensor([0.0, 0.5, 1.0]))
    assert torch.sigmoid(torch.tensor(0.0)) * (ZETA - GAMMA) + GAMMA == pytest.approx(0.5)
    assert q.rounding_loss(2.0).item() == pytest.approx(1.0)  # only the undecided weight costs


def test_qdrop_keeps_quantized_values_with_probability_p():
    torch.manual_seed(6)
    x = torch.randn(200, 50)
    q = _calibrated(FixedFakeQuantize, x, 2, False)
    quantized = q(x)
    q.drop_prob = 0.3
    mixed = q(x)
    from_quant = (mixed == quantized) & (quantized != x)
    from_fp = (mixed == x) & (quantized != x)
    assert torch.all(from_quant | from_fp | (quantized == x))
    fraction = from_quant.sum().item() / (from_quant.sum() + from_fp.sum()).item()
    assert abs(fraction - 0.3) < 0.02
