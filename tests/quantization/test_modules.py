"""The quantized layers with their quantizers ON against an independent fake-quant computation.

Every quantizer gets a hand-set scale and zero point; the expected output is computed from the
definition (``q = clamp(round(x / s) + z, qmin, qmax)``, ``x_hat = (q - z) s``; docs/method.md,
"Quantizers"), per tensor or per output channel, with the layer's arithmetic done in float64.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from d4c.quantization.modules import QuantAttentionCore, QuantConv2d, QuantLinear
from d4c.quantization.quantizer_config import QuantizerConfig
from d4c.quantization.quant_clip import enable_quantization
from tests.numerics import assert_relative_close

W4 = QuantizerConfig("AdaRoundFakeQuantize", "MinMaxObserver", 4, False, 0)
A8 = QuantizerConfig("LSQFakeQuantize", "MinMaxObserver", 8, False, -1)
FIXED_A8 = QuantizerConfig("FixedFakeQuantize", "MinMaxObserver", 8, False, -1)


def fake_quant(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int,
               axis: int | None = None) -> torch.Tensor:
    """The definition, written out: per tensor, or per index of dimension ``axis``."""
    if axis is not None:
        shape = [1] * x.dim()
        shape[axis] = -1
        scale, zero_point = scale.view(shape), zero_point.view(shape)
    q = torch.clamp(torch.round(x * (1.0 / scale)) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


def set_qparams(quantizer, scale, zero_point) -> tuple[torch.Tensor, torch.Tensor]:
    """Give ``quantizer`` this scale and zero point (per tensor or per channel); return them as tensors."""
    scale = torch.as_tensor(scale, dtype=torch.float32).reshape(-1)
    zero_point = torch.as_tensor(zero_point, dtype=torch.float32).reshape(-1)
    with torch.no_grad():
        quantizer.scale.copy_(scale)
        quantizer.zero_point.copy_(zero_point)
    return scale, zero_point


def _row_qparams(weight: torch.Tensor, bits: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """A per-output-channel asymmetric grid covering each row's range."""
    rows = weight.detach().flatten(1)
    low, high = rows.min(1).values.clamp(max=0), rows.max(1).values.clamp(min=0)
    scale = (high - low) / (2**bits - 1)
    return scale, torch.round(-low / scale)


def test_quant_linear_with_quantizers_on():
    torch.manual_seed(0)
    layer = QuantLinear(nn.Linear(12, 5), W4, A8)
    x = torch.randn(7, 12) * 1.5 + 0.2
    w_scale, w_zp = set_qparams(layer.weight_quantizer, *_row_qparams(layer.weight))
    a_scale, a_zp = set_qparams(layer.input_quantizer, 0.02, 118)  # clips both tails of x
    enable_quantization(layer)
    with torch.no_grad():
        got = layer(x)
        expected = F.linear(fake_quant(x, a_scale, a_zp, 0, 255).double(),
                            fake_quant(layer.weight, w_scale, w_zp, 0, 15, axis=0).double(), layer.bias.double())
    assert_relative_close(got, expected, 1e-6, "QuantLinear output")
    assert (got - F.linear(x, layer.weight, layer.bias)).abs().max() > 1e-2  # the quantizers were on


def test_quant_linear_with_per_channel_inputs_and_soft_adaround():
    torch.manual_seed(1)
    layer = QuantLinear(nn.Linear(6, 4), W4, A8, act_ch_axis=2)
    x = torch.randn(3, 2, 6)  # [L, N, D]: per channel over the hidden dimension
    w_scale, w_zp = set_qparams(layer.weight_quantizer, *_row_qparams(layer.weight))
    a_scale, a_zp = set_qparams(layer.input_quantizer, torch.linspace(0.01, 0.03, 6), torch.arange(120, 126))
    enable_quantization(layer)
    layer.weight_quantizer.init_alpha(layer.weight)
    with torch.no_grad():
        layer.weight_quantizer.alpha.add_(torch.randn_like(layer.weight_quantizer.alpha))  # learned, not nearest
        got = layer(x)
        alpha = layer.weight_quantizer.alpha
        h = torch.clamp(torch.sigmoid(alpha) * 1.2 - 0.1, 0, 1)  # AdaRound's rectified sigmoid, zeta 1.1, gamma -0.1
        s, z = w_scale[:, None], w_zp[:, None]
        soft = (torch.clamp(torch.floor(layer.weight / s) + h + z, 0, 15) - z) * s
        expected = F.linear(fake_quant(x, a_scale, a_zp, 0, 255, axis=2).double(), soft.double(), layer.bias.double())
    assert_relative_close(got, expected, 1e-6, "soft-rounded QuantLinear output")


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 0)])
def test_quant_conv2d_with_quantizers_on(stride, padding):
    torch.manual_seed(2)
    conv = QuantConv2d(nn.Conv2d(3, 4, 3, stride=stride, padding=padding), W4, FIXED_A8)
    x = torch.relu(torch.randn(2, 3, 9, 9))
    w_scale, w_zp = set_qparams(conv.weight_quantizer, *_row_qparams(conv.weight))
    a_scale, a_zp = set_qparams(conv.input_quantizer, 0.01, 0)  # one-sided input, clipped above 2.55
    enable_quantization(conv)
    with torch.no_grad():
        got = conv(x)
        expected = F.conv2d(fake_quant(x, a_scale, a_zp, 0, 255).double(),
                            fake_quant(conv.weight, w_scale, w_zp, 0, 15, axis=0).double(), conv.bias.double(),
                            stride=stride, padding=padding)
    assert_relative_close(got, expected, 1e-6, "QuantConv2d output")


@pytest.mark.parametrize("masked", [False, True])
def test_attention_core_with_quantizers_on(masked):
    torch.manual_seed(3)
    heads, width, length, batch = 2, 8, 5, 3
    core = QuantAttentionCore(width, heads, QuantLinear(nn.Linear(width, width), W4, A8), A8)
    q, k, v = (torch.randn(length, batch, width) for _ in range(3))
    mask = torch.full((length, length), float("-inf")).triu(1) if masked else None  # CLIP's causal mask
    quantizers = {"q": (0.03, 128), "k": (0.025, 120), "v": (0.02, 130), "softmax": (1 / 255, 0)}
    params = {name: set_qparams(getattr(core, f"{name}_quantizer"), *values) for name, values in quantizers.items()}
    out = core.out_proj
    w_scale, w_zp = set_qparams(out.weight_quantizer, *_row_qparams(out.weight))
    o_scale, o_zp = set_qparams(out.input_quantizer, 0.015, 128)
    enable_quantization(core)
    with torch.no_grad():
        got = core(q, k, v, attn_mask=mask)

        def split(t, name):  # quantized, then [N, heads, L, d] in float64
            t = fake_quant(t, *params[name], 0, 255).double()
            return t.reshape(length, batch, heads, width // heads).permute(1, 2, 0, 3)

        scores = split(q, "q") @ split(k, "k").transpose(-1, -2) / (width // heads) ** 0.5
        if mask is not None:
            scores = scores + mask.double()
        probs = fake_quant(torch.softmax(scores, dim=-1).float(), *params["softmax"], 0, 255).double()
        mixed = (probs @ split(v, "v")).permute(2, 0, 1, 3).reshape(length, batch, width)
        expected = F.linear(fake_quant(mixed.float(), o_scale, o_zp, 0, 255).double(),
                            fake_quant(out.weight, w_scale, w_zp, 0, 15, axis=0).double(), out.bias.double())
    assert_relative_close(got, expected, 1e-5, "attention core output")
