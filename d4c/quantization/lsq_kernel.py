"""LSQ / LSQ+ fake quantization as plain tensor operations with torch's own gradient formulas.

``torch._fake_quantize_learnable_per_{tensor,channel}_affine`` are opaque element-by-element
kernels: a compiled graph cannot fuse them with the matrix products' neighbours, and the
per-tensor one reads the scale with ``.item()`` (a host synchronisation on CUDA at every step).
:func:`learnable_fake_quantize` computes the same forward values and the same gradients — torch's
kernels' formulas, operation for operation, checked bit for bit in
``tests/quantization/test_lsq_kernel.py`` — with tensor operations:

* forward: ``(clamp(round(x * (1 / s)) + zp, qmin, qmax) - zp) * s`` (round half to even);
* input gradient: ``dy`` where ``qmin <= round(...) + zp <= qmax``, else 0 (straight through);
* scale gradient per element: inside the grid ``dy * (x_fq - x) / s``, below it
  ``dy * (qmin - zp)``, above it ``dy * (qmax - zp)``, times ``grad_factor``, summed per scale;
* zero-point gradient per element (LSQ+): ``-dy * s * grad_factor`` outside the grid, 0 inside.

The zero point is rounded (and clamped to the grid) as torch does: per channel ``round`` in both
directions; per tensor ``round`` half to even in the forward and ``trunc(zp + 0.5)`` in the
backward, exactly as ``_get_zero_point_from_tensor``. The per-tensor path needs no ``.item()``
(no host synchronisation on a GPU).
"""

from __future__ import annotations

import torch


def _rounded_zero_point(zero_point: torch.Tensor, qmin: int, qmax: int, forward: bool, per_channel: bool
                        ) -> torch.Tensor:
    if per_channel or forward:
        return zero_point.round().clamp(qmin, qmax)
    return torch.trunc(zero_point + 0.5).clamp(qmin, qmax)  # torch: static_cast<int64_t>(zp + 0.5f)


class _LearnableFakeQuantize(torch.autograd.Function):
    """``x -> x_fq`` with LSQ gradients for ``x``, ``scale`` and ``zero_point`` (see the module docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, shape: tuple[int, ...],
                per_channel: bool, qmin: int, qmax: int, grad_factor: float) -> torch.Tensor:
        s = scale.reshape(shape)
        zp = _rounded_zero_point(zero_point, qmin, qmax, True, per_channel).reshape(shape)
        inv = torch.reciprocal(s)
        integer = torch.round(x * inv).add_(zp).clamp_(qmin, qmax)
        ctx.save_for_backward(x, scale, zero_point)
        ctx.config = (shape, qmin, qmax, grad_factor, per_channel)
        return integer.sub_(zp).mul_(s)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x, scale, zero_point = ctx.saved_tensors
        shape, qmin, qmax, grad_factor, per_channel = ctx.config
        s = scale.reshape(shape)
        zp = _rounded_zero_point(zero_point, qmin, qmax, False, per_channel).reshape(shape)
        inv = torch.reciprocal(s)
        # torch's backward kernels compute zp + x * inv and x_fq - x as fused multiply-adds (so do
        # addcmul's kernels); its forward kernel rounds x * inv before adding zp (differs only at ties).
        integer = torch.round(torch.addcmul(zp, x, inv))
        clamped = integer.clamp(qmin, qmax)
        # 0/1 float masks instead of torch.where, which is many times slower on CPUs: a*1 + b*0 == a.
        inside = (clamped == integer).to(dy.dtype)
        dx = inside * dy if ctx.needs_input_grad[0] else None  # in x's layout, as torch's
        reduce_dims = [d for d in range(x.dim()) if not per_channel or shape[d] != -1]
        dscale = dzero_point = None
        if ctx.needs_input_grad[1]:
            error = torch.addcmul(-x, clamped - zp, s)  # x_fq - x, fused as in torch's kernel
            bound = (qmin - zp) * (integer < qmin).to(dy.dtype) + (qmax - zp) * (integer > qmax).to(dy.dtype)
            # error * dy (== dy * error) first: the products take x's memory layout, as torch's
            # per-element gradients do, so the sum below adds them in the same order.
            per_element = (error * dy * inv * inside).add_(bound * dy).mul_(grad_factor)
            dscale = per_element.sum(reduce_dims).reshape(scale.shape)
        if ctx.needs_input_grad[2]:
            per_element = ((1 - inside) * dy * -1 * s * grad_factor)
            dzero_point = per_element.sum(reduce_dims).reshape(zero_point.shape)
        return dx, dscale, dzero_point, None, None, None, None, None


def learnable_fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, ch_axis: int,
                            qmin: int, qmax: int, grad_factor: float) -> torch.Tensor:
    """``torch._fake_quantize_learnable_per_channel_affine(x, scale, zero_point, ch_axis, ...)`` (``ch_axis >= 0``)
    or ``..._per_tensor_affine`` (``ch_axis < 0``): the same values and gradients, faster (module docstring).

    ``scale`` and ``zero_point`` are float vectors (length 1 per tensor, ``x.shape[ch_axis]`` per channel).
    """
    shape = [1] * x.dim()
    if ch_axis >= 0:
        shape[ch_axis] = -1
    return _LearnableFakeQuantize.apply(x, scale, zero_point, tuple(shape), ch_axis >= 0, qmin, qmax, grad_factor)


def torch_learnable_fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, ch_axis: int,
                                  qmin: int, qmax: int, grad_factor: float) -> torch.Tensor:
    """The same through torch's generic kernels (the reference for tests and benchmarks)."""
    if ch_axis >= 0:
        return torch._fake_quantize_learnable_per_channel_affine(x, scale, zero_point, ch_axis, qmin, qmax,
                                                                 grad_factor)
    return torch._fake_quantize_learnable_per_tensor_affine(x, scale, zero_point, qmin, qmax, grad_factor)
