"""Observers: the range ``[min, max]`` a quantizer's scale and zero point come from (docs/method.md, "Observers").

An observer sees one or more batches (``observer(x)``) and keeps a range per tensor or per
channel along ``ch_axis`` (``-1`` per-tensor, as in :mod:`d4c.quantization.qparams`):

* ``MinMaxObserver``: the min of the batch minima and the max of the batch maxima;
* ``AvgMinMaxObserver``: the mean of the batch minima and of the batch maxima;
* ``MSEObserver`` / ``MSEFastObserver``: per batch, the range minimising the L_p error (p = 2.4)
  of the fake-quantized batch (the exact :func:`~d4c.quantization.range_search.search_range`, or
  the approximate :func:`~d4c.quantization.range_search.golden_section_search`), combined across
  batches like MinMax;
* ``AvgMSEObserver`` / ``AvgMSEFastObserver``: the same per-batch ranges, averaged.

The MSE observers decide on the first batch whether the data is one-sided (non-negative or
non-positive) or two-sided, and keep that decision for later batches.
"""

from __future__ import annotations

import torch
from torch import nn

from d4c.quantization.qparams import calculate_qparams, channels_first, quant_range
from d4c.quantization.range_search import LP_NORM, data_sidedness, golden_section_search, search_range
from d4c.runtime import intra_op_threads


class ObserverBase(nn.Module):
    """Tracks ``min_val``/``max_val`` (scalars, or one per channel along ``ch_axis``)."""

    averaging = False
    searches = False
    """True when observing a batch is a range search (the MSE observers): worth a thread of its own."""

    def __init__(self, bit: int, symmetric: bool, ch_axis: int = -1):
        super().__init__()
        self.bit, self.symmetric, self.ch_axis = bit, symmetric, ch_axis
        self.qmin, self.qmax = quant_range(bit, symmetric)
        # Calibration statistics are not part of a saved quantized model: the scales are.
        self.register_buffer("min_val", torch.tensor([]), persistent=False)
        self.register_buffer("max_val", torch.tensor([]), persistent=False)
        self.batches = 0

    def reset(self) -> None:
        """Forget every batch seen."""
        self.min_val = torch.tensor([], device=self.min_val.device)
        self.max_val = torch.tensor([], device=self.max_val.device)
        self.batches = 0

    def batch_range(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The range chosen for one batch (``[C]`` tensors, ``C = 1`` per-tensor)."""
        xc = channels_first(x, self.ch_axis)
        return xc.min(1).values, xc.max(1).values

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Observe ``x`` (returned unchanged)."""
        if x.numel() == 0:
            return x
        new_min, new_max = self.batch_range(x.detach().float())
        new_min, new_max = new_min.reshape(-1), new_max.reshape(-1)
        if self.batches == 0:
            self.min_val, self.max_val = new_min.clone(), new_max.clone()
        elif self.averaging:
            n = self.batches
            self.min_val = self.min_val + (new_min - self.min_val) / (n + 1)
            self.max_val = self.max_val + (new_max - self.max_val) / (n + 1)
        else:
            self.min_val = torch.minimum(self.min_val, new_min)
            self.max_val = torch.maximum(self.max_val, new_max)
        self.batches += 1
        return x

    def settings(self) -> tuple:
        """What decides, with the state, the range this observer makes of a batch."""
        return type(self), self.bit, self.symmetric, self.ch_axis

    def state(self) -> tuple:
        """What it has kept of the batches seen (tensors last)."""
        return self.batches, self.min_val, self.max_val

    def equivalent(self, other: "ObserverBase") -> bool:
        """True when ``other`` would keep exactly what this observer keeps after the same batches."""
        if self.settings() != other.settings():
            return False
        return all(torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b
                   for a, b in zip(self.state(), other.state()))

    def adopt(self, other: "ObserverBase") -> None:
        """Take the state of an :meth:`equivalent` observer that has seen batches this one would have seen."""
        self.batches = other.batches
        self.min_val, self.max_val = other.min_val.clone(), other.max_val.clone()

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point (``[C]`` tensors, ``C = 1`` per-tensor) of the observed range."""
        if self.batches == 0:
            raise RuntimeError("the observer has not seen any data")
        return calculate_qparams(self.min_val, self.max_val, self.qmin, self.qmax, self.symmetric)


class MinMaxObserver(ObserverBase):
    """Min of minima and max of maxima over all batches."""


class AvgMinMaxObserver(ObserverBase):
    """Mean of the per-batch minima and maxima."""

    averaging = True


class _MSEObserverBase(ObserverBase):
    """Per batch, the range with the smallest L_p error of fake quantization."""

    searches = True

    def __init__(self, bit: int, symmetric: bool, ch_axis: int = -1, p: float = LP_NORM):
        super().__init__(bit, symmetric, ch_axis)
        self.p = p
        self.sidedness: str | None = None

    def reset(self) -> None:
        super().reset()
        self.sidedness = None

    def settings(self) -> tuple:
        return *super().settings(), self.p

    def state(self) -> tuple:
        return self.sidedness, *super().state()

    def adopt(self, other: "ObserverBase") -> None:
        super().adopt(other)
        self.sidedness = other.sidedness

    def search(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def batch_range(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.sidedness is None:
            x_min, x_max = super().batch_range(x)
            self.sidedness = data_sidedness(x_min, x_max)
        with intra_op_threads(1):  # a chain of small operations: barriers would dominate (d4c.runtime)
            return self.search(x)


class MSEObserver(_MSEObserverBase):
    """The reference's grid of candidate ranges, searched exactly; batches combined like MinMax."""

    def search(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return search_range(x, self.qmin, self.qmax, self.symmetric, self.ch_axis, p=self.p,
                            sidedness=self.sidedness)


class AvgMSEObserver(MSEObserver):
    """:class:`MSEObserver`'s per-batch ranges, averaged."""

    averaging = True


class MSEFastObserver(_MSEObserverBase):
    """The L_p-optimal range by bounded scalar (golden-section) searches; batches combined like MinMax."""

    def search(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return golden_section_search(x, self.qmin, self.qmax, self.symmetric, self.ch_axis, p=self.p,
                                     sidedness=self.sidedness)


class AvgMSEFastObserver(MSEFastObserver):
    """:class:`MSEFastObserver`'s per-batch ranges, averaged."""

    averaging = True


OBSERVER_CLASSES: dict[str, type[ObserverBase]] = {
    cls.__name__: cls for cls in (MinMaxObserver, AvgMinMaxObserver, MSEObserver, AvgMSEObserver,
                                  MSEFastObserver, AvgMSEFastObserver)
}


def build_observer(name: str, bit: int, symmetric: bool, ch_axis: int = -1) -> ObserverBase:
    """An observer of the class called ``name`` (a key of :data:`OBSERVER_CLASSES`)."""
    return OBSERVER_CLASSES[name](bit, symmetric, ch_axis)
