"""Fake quantizers (docs/method.md, "Quantizers"): Fixed, LSQ, LSQ+ and AdaRound fake quantization.

A fake quantizer maps a tensor onto its ``bit``-bit grid and back to floats. Each holds an
observer; while ``observer_enabled`` it feeds the observer and takes its scale and zero point
from it. While ``fake_quant_enabled`` is off it is the identity (a freshly wrapped model behaves
exactly like the original). Scales and zero points are ``[C]`` vectors: ``C = 1`` per-tensor
(``ch_axis = -1``), one per index of dimension ``ch_axis`` otherwise.

* Fixed: plain fake quantization, straight-through gradient for the input.
* LSQ: the scale is learnable; its gradient is scaled by ``1/sqrt(numel * qmax)`` (per channel:
  ``numel / C``); straight-through rounding: torch's ``_fake_quantize_learnable_*`` kernels in
  eager CPU runs, and on CUDA and inside compiled graphs the same formulas as plain tensor
  operations (:mod:`d4c.quantization.lsq_kernel`: no host synchronisation, fusable; values and
  gradients equal). LSQ+: the zero point is learnable as well.
* AdaRound (weights): ``w_q = (clamp(floor(w/s) + h(alpha) + zp, qmin, qmax) - zp) * s`` with the
  rectified sigmoid ``h``; round-to-nearest until :meth:`AdaRoundFakeQuantize.init_alpha`, then
  learned soft rounding, then :meth:`AdaRoundFakeQuantize.harden` writes the hard rounding into
  the weight.

QDrop: an activation quantizer with ``drop_prob < 1`` keeps the quantized value of each element
with probability ``drop_prob`` and the unquantized value otherwise (only set while reconstructing).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from d4c.quantization.lsq_kernel import learnable_fake_quantize, torch_learnable_fake_quantize
from d4c.quantization.observers import ObserverBase, build_observer
from d4c.quantization.qparams import broadcast_shape, quant_range
from d4c.quantization.quantizer_config import QuantizerConfig

ZETA, GAMMA = 1.1, -0.1
"""Stretch of AdaRound's rectified sigmoid ``h(alpha) = clamp(sigmoid(alpha) * (ZETA - GAMMA) + GAMMA, 0, 1)``."""
MIN_SCALE = 1e-8


class FakeQuantizeBase(nn.Module):
    """Observer, scale/zero-point state, enable switches and QDrop; subclasses define :meth:`quantize`."""

    learnable_scale = False
    learnable_zero_point = False
    observation_sink: Callable[["FakeQuantizeBase", torch.Tensor], None] | None = None
    """Set by :func:`d4c.quantization.calibration.calibrate`: takes ``(self, x)`` instead of observing now."""

    def __init__(self, observer: ObserverBase, bit: int, symmetric: bool, ch_axis: int = -1, channels: int = 1):
        super().__init__()
        self.observer = observer
        self.bit, self.symmetric, self.ch_axis = bit, symmetric, ch_axis
        self.qmin, self.qmax = quant_range(bit, symmetric)
        self.channels = channels if ch_axis >= 0 else 1
        scale, zero_point = torch.ones(self.channels), torch.zeros(self.channels)
        if self.learnable_scale:
            self.scale = nn.Parameter(scale, requires_grad=False)
        else:
            self.register_buffer("scale", scale)
        if self.learnable_zero_point:
            self.zero_point = nn.Parameter(zero_point, requires_grad=False)
        else:
            self.register_buffer("zero_point", zero_point)
        self.observer_enabled = False
        self.fake_quant_enabled = False
        self.drop_prob = 1.0

    def extra_repr(self) -> str:
        kind = "per-tensor" if self.ch_axis < 0 else f"per-channel(axis={self.ch_axis}, {self.channels})"
        return (f"bit={self.bit}, {'symmetric' if self.symmetric else 'asymmetric'}, {kind}, "
                f"observer={self.observer_enabled}, fake_quant={self.fake_quant_enabled}")

    @torch.no_grad()
    def update_qparams(self) -> None:
        """Copy the observer's scale and zero point into this quantizer."""
        scale, zero_point = self.observer.calculate_qparams()
        if scale.numel() != self.channels:
            raise RuntimeError(f"observer produced {scale.numel()} scales for a quantizer with "
                               f"{self.channels} channels")
        self.scale.copy_(scale.reshape(-1).clamp(min=MIN_SCALE))
        self.zero_point.copy_(zero_point.reshape(-1))

    def observe(self, x: torch.Tensor) -> None:
        """Feed ``x`` to the observer and refresh scale and zero point."""
        self.observer(x)
        self.update_qparams()

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer_enabled:
            if self.observation_sink is not None:
                self.observation_sink(self, x)
            else:
                self.observe(x)
        if not self.fake_quant_enabled:
            return x
        x_q = self.quantize(x.float()).to(x.dtype)
        if self.drop_prob < 1.0:
            x_q = torch.where(torch.rand_like(x) < self.drop_prob, x_q, x)
        return x_q

    def _axis(self, x: torch.Tensor) -> int:
        axis = self.ch_axis
        if x.shape[axis] != self.channels:
            raise RuntimeError(f"quantizer expects {self.channels} channels along dim {axis}, "
                               f"got shape {tuple(x.shape)}")
        return axis

    def grad_factor(self, x: torch.Tensor) -> float:
        """LSQ's gradient scale ``1 / sqrt(elements per scale * qmax)``."""
        return 1.0 / math.sqrt(x.numel() / self.channels * self.qmax)


class FixedFakeQuantize(FakeQuantizeBase):
    """Fake quantization with the observed scale and zero point (nothing learned)."""

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        zero_point = self.zero_point.round().to(torch.int32)
        if self.ch_axis < 0:
            return torch.fake_quantize_per_tensor_affine(x, self.scale, zero_point, self.qmin, self.qmax)
        return torch.fake_quantize_per_channel_affine(x, self.scale, zero_point, self._axis(x), self.qmin, self.qmax)


class LSQFakeQuantize(FakeQuantizeBase):
    """Learned step size quantization: learnable scale, straight-through rounding."""

    learnable_scale = True
    kernel = None
    """None: the kernel the device and mode call for (see :meth:`quantize`); benchmarks set one."""

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale.clamp(min=MIN_SCALE)
        factor = self.grad_factor(x)
        axis = self._axis(x) if self.ch_axis >= 0 else -1
        kernel = self.kernel
        if kernel is None:  # torch's generic kernels in eager CPU runs; ours where they sync or cannot fuse
            fused = x.device.type != "cpu" or torch.compiler.is_compiling()
            kernel = learnable_fake_quantize if fused else torch_learnable_fake_quantize
        return kernel(x, scale, self.zero_point, axis, self.qmin, self.qmax, factor)


class LSQPlusFakeQuantize(LSQFakeQuantize):
    """LSQ+: learnable scale and zero point."""

    learnable_zero_point = True


class AdaRoundFakeQuantize(FixedFakeQuantize):
    """Adaptive rounding of weights; round-to-nearest until :meth:`init_alpha` is called."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_parameter("alpha", None)

    def _broadcast(self, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return t.reshape(broadcast_shape(w, self.ch_axis)) if self.ch_axis >= 0 else t

    @torch.no_grad()
    def init_alpha(self, w: torch.Tensor) -> None:
        """Start soft rounding with ``h(alpha)`` equal to the fractional part of ``w / s``."""
        scaled = w.float() / self._broadcast(self.scale, w)
        rest = scaled - torch.floor(scaled)
        alpha = -torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1)
        self.alpha = nn.Parameter(alpha, requires_grad=False)

    @property
    def soft(self) -> bool:
        """True while the rounding is learned (between :meth:`init_alpha` and :meth:`harden`)."""
        return self.alpha is not None

    def h(self) -> torch.Tensor:
        """The rectified sigmoid ``h(alpha)`` in [0, 1]: how far each weight is rounded up."""
        return torch.clamp(torch.sigmoid(self.alpha) * (ZETA - GAMMA) + GAMMA, 0, 1)

    def rounding_loss(self, b: float | torch.Tensor) -> torch.Tensor:
        """AdaRound's regulariser ``sum(1 - |2 h(alpha) - 1|^b)`` (pushes h to 0 or 1)."""
        return (1 - (2 * self.h() - 1).abs().pow(b)).sum()

    def _rounded(self, w: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        scale = self._broadcast(self.scale, w)
        zero_point = self._broadcast(self.zero_point.round(), w)
        integer = torch.clamp(torch.floor(w / scale) + offset + zero_point, self.qmin, self.qmax)
        return (integer - zero_point) * scale

    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        if not self.soft:
            return super().quantize(w)
        return self._rounded(w, self.h())

    @torch.no_grad()
    def harden(self, weight: torch.Tensor) -> None:
        """Write the hard rounding (``alpha >= 0`` rounds up) into ``weight`` and stop learning."""
        if not self.soft:
            return
        hard = self._rounded(weight.float(), (self.alpha >= 0).float())
        weight.copy_(hard.to(weight.dtype))
        self.alpha = None


QUANTIZER_CLASSES: dict[str, type[FakeQuantizeBase]] = {
    cls.__name__: cls for cls in (FixedFakeQuantize, LSQFakeQuantize, LSQPlusFakeQuantize, AdaRoundFakeQuantize)
}


def build_quantizer(config: QuantizerConfig, ch_axis: int | None = None, channels: int = 1) -> FakeQuantizeBase:
    """A quantizer as ``config`` describes; ``ch_axis`` overrides the config's axis (model exceptions)."""
    axis = config.ch_axis if ch_axis is None else ch_axis
    observer = build_observer(config.observer, config.bit, config.symmetric, axis)
    return QUANTIZER_CLASSES[config.quantizer](observer, config.bit, config.symmetric, axis, channels)
