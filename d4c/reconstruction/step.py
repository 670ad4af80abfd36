"""The loss of one reconstruction step, from the sampled row indices: eager, or compiled as one graph.

Eager, it is exactly the loss the engine always computed (the same operations in the same order).
Compiled (``--compile``, :mod:`d4c.acceleration`), the row gathering, the unit's forward (fake
quantization, matrix product or convolution), the loss and the rounding term are one inductor
graph, and so is their backward: the elementwise work between the matrix products is fused into
a few loops. The rounding exponent ``b`` then enters as a 0-dim tensor (the whole schedule is
made once per unit, so no step copies a number to the device), and one compiled graph serves every
step and every unit of the same shape; the warm-up steps (no rounding term) use a second one.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from d4c.acceleration import Compiled
from d4c.quantization.fake_quant import AdaRoundFakeQuantize
from d4c.reconstruction.forward import UnitForward

LossFn = Callable[[torch.Tensor, torch.Tensor, int, "torch.Tensor | None"], torch.Tensor]


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


class StepLoss:
    """``step_loss(step, index) -> (reconstruction loss, total loss)`` of a unit on cached rows ``index``.

    Args:
        forward: the unit on cached rows (:class:`~d4c.reconstruction.forward.UnitForward`).
        target: the full-precision outputs of every cached row (cache device).
        mask: ``[N, L]`` output tokens the loss counts, or None for all (cache device).
        sum_dim: the dimension the loss sums over (:func:`~d4c.reconstruction.engine.loss_sum_dim`).
        loss: ``loss(out, target, sum_dim, mask)`` (:func:`~d4c.reconstruction.engine.reconstruction_loss`).
        rounding: the unit's AdaRound quantizers (soft rounding on).
        weight: the rounding term's weight.
        exponents: the rounding exponent ``b`` of every step, None during warm-up.
        device: where the loss is computed.
        compile: compile the step (falls back to eager, with a warning, if compilation fails).
    """

    def __init__(self, forward: UnitForward, target: torch.Tensor, mask: torch.Tensor | None, sum_dim: int,
                 loss: LossFn, rounding: Sequence[AdaRoundFakeQuantize], weight: float,
                 exponents: Sequence[float | None], device: torch.device, compile: bool = False):
        self.forward, self.target, self.mask, self.sum_dim, self.loss = forward, target, mask, sum_dim, loss
        self.rounding = list(rounding) if weight > 0 else []
        self.weight, self.exponents, self.device = weight, list(exponents), torch.device(device)
        self.compiled = Compiled(self._graph, "reconstruction step", enabled=compile)
        if compile:
            self._gather_inside = _same_device(target.device, self.device)
            self._b = torch.tensor([1.0 if b is None else b for b in self.exponents], device=self.device)

    def _rows(self, index: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None]:
        device = self.device
        batch = [x[index].to(device, non_blocking=True) for x in self.forward.tensors]
        target = self.target[index].to(device, non_blocking=True)
        mask = None if self.mask is None else self.mask[index].to(device, non_blocking=True)
        return batch, target, mask

    def _losses(self, batch: list[torch.Tensor], target: torch.Tensor, mask: torch.Tensor | None,
                b: float | torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        rec_loss = self.loss(self.forward(batch), target, self.sum_dim, mask)
        if b is None or not self.rounding:
            return rec_loss, rec_loss
        return rec_loss, rec_loss + self.weight * sum(q.rounding_loss(b) for q in self.rounding)

    def _graph(self, rows: torch.Tensor | tuple, b: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        batch, target, mask = self._rows(rows) if isinstance(rows, torch.Tensor) else rows
        return self._losses(batch, target, mask, b)

    def backward(self, step: int, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's losses, with the total loss's gradients accumulated into the unit's parameters.

        A compiled backward is built on its first call; if that fails, this step is redone eagerly
        (the unit's gradients are cleared first).
        """
        rec_loss, loss = self(step, index)
        if not self.compiled.active:
            loss.backward()
            return rec_loss, loss
        try:
            loss.backward()
        except Exception as error:  # noqa: BLE001 - any compiler failure means: run eagerly
            self.compiled.fall_back(error)
            for parameter in self._parameters():
                parameter.grad = None
            rec_loss, loss = self(step, index)
            loss.backward()
        return rec_loss, loss

    def _parameters(self) -> list[torch.Tensor]:
        return [p for p in self.forward.module.parameters() if p.requires_grad]

    def __call__(self, step: int, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.exponents[step]
        if self.compiled.active:
            rows = index if self._gather_inside else self._rows(index)
            result = self.compiled.run(rows, None if b is None else self._b[step])
            if self.compiled.active:
                return result
        return self._losses(*self._rows(index), b)  # eager: exactly the engine's original step
