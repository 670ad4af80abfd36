"""Integer grids, scale and zero point from a range, fake quantization, its L_p error (docs/method.md, "Quantizers").

Conventions (QDrop's, which the reference implementation uses):

* asymmetric grid ``[0, 2^b - 1]``; symmetric grid ``[-2^(b-1), 2^(b-1) - 1]``;
* ``ch_axis = -1`` means per-tensor; ``ch_axis = k >= 0`` means one scale and zero point per
  index of dimension ``k``;
* ``scale = (max+ - min-) / (qmax - qmin)`` (at least 1e-8), ``zero_point = clamp(qmin -
  round(min- / scale), qmin, qmax)`` with ``min- = min(min, 0)``, ``max+ = max(max, 0)``;
  symmetric: ``scale = max(-min-, max+) / ((qmax - qmin) / 2)``, ``zero_point = 0``;
* fake quantization rounds ``x * (1 / scale)`` half to even, exactly like
  ``torch.fake_quantize_per_tensor_affine``.
"""

from __future__ import annotations

import torch

SCALE_EPS = 1e-8


def quant_range(bit: int, symmetric: bool) -> tuple[int, int]:
    """``(qmin, qmax)`` of a ``bit``-bit grid."""
    if symmetric:
        return -(2 ** (bit - 1)), 2 ** (bit - 1) - 1
    return 0, 2**bit - 1


def calculate_qparams(min_val: torch.Tensor, max_val: torch.Tensor, qmin: int, qmax: int,
                      symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and (float, integer-valued) zero point covering ``[min_val, max_val]`` (any shape)."""
    min_neg = torch.clamp(min_val, max=0.0)
    max_pos = torch.clamp(max_val, min=0.0)
    if symmetric:
        scale = (torch.maximum(-min_neg, max_pos) / ((qmax - qmin) / 2)).clamp(min=SCALE_EPS)
        return scale, torch.zeros_like(scale)
    scale = ((max_pos - min_neg) / float(qmax - qmin)).clamp(min=SCALE_EPS)
    zero_point = (qmin - torch.round(min_neg / scale)).clamp(qmin, qmax)
    return scale, zero_point


def broadcast_shape(x: torch.Tensor, ch_axis: int) -> list[int]:
    """Shape that makes a per-channel vector broadcast along ``ch_axis`` of ``x``."""
    shape = [1] * x.dim()
    shape[ch_axis] = -1
    return shape


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int,
                  ch_axis: int = -1) -> torch.Tensor:
    """Quantize and de-quantize ``x`` (no gradient rules: for search and reference use).

    ``scale``/``zero_point`` are scalars (per-tensor) or vectors along ``ch_axis``.
    """
    if ch_axis >= 0 and scale.dim() > 0:
        scale = scale.reshape(broadcast_shape(x, ch_axis))
        zero_point = zero_point.reshape(broadcast_shape(x, ch_axis))
    q = torch.clamp(torch.round(x * (1.0 / scale)) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


def channels_first(x: torch.Tensor, ch_axis: int) -> torch.Tensor:
    """``x`` as ``[C, M]`` (per-channel along ``ch_axis``) or ``[1, M]`` (per-tensor)."""
    if ch_axis < 0:
        return x.reshape(1, -1)
    return x.movedim(ch_axis, 0).reshape(x.shape[ch_axis], -1)


def lp_error(x: torch.Tensor, x_hat: torch.Tensor, p: float, ch_axis: int = -1) -> torch.Tensor:
    """Mean ``|x - x_hat|^p``: a scalar per-tensor, one value per channel along ``ch_axis``."""
    err = (x - x_hat).abs().pow(p)
    return channels_first(err, ch_axis).mean(1) if ch_axis >= 0 else err.mean()
