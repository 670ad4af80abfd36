"""Running a unit on cached rows, with what stays constant during its training computed once.

Generic units are called with their cached inputs (batch axis moved back into place). A
Bottleneck with a downsample branch keeps that branch full precision and frozen, and it sees the
unit's unquantized input: its output is the same at every step, so it is computed once for all
cached rows and sampled together with the inputs.
"""

from __future__ import annotations

import torch
from torch import nn

from d4c.models.family import bottleneck_activation, is_bottleneck
from d4c.reconstruction.cache import apply_chunked
from d4c.reconstruction.units import Unit


class UnitForward:
    """``forward(batch)`` runs the unit on rows sampled from :attr:`tensors` (all batch-first)."""

    def __init__(self, module: nn.Module, inputs: list[torch.Tensor], kwargs: dict, unit: Unit,
                 device: torch.device, store: torch.device):
        self.module, self.kwargs, self.unit = module, kwargs, unit
        if is_bottleneck(module) and module.downsample is not None:
            identity = apply_chunked(module.downsample, inputs[0], device, store)
            self.tensors = [inputs[0], identity]
            self._run = self._bottleneck
        else:
            self.tensors = list(inputs)
            self._run = self._generic

    def __call__(self, batch: list[torch.Tensor]) -> torch.Tensor:
        return self._run(batch)

    def _generic(self, batch: list[torch.Tensor]) -> torch.Tensor:
        axis = self.unit.batch_axis
        out = self.module(*[x.movedim(0, axis) for x in batch], **self.kwargs)
        return out.movedim(axis, 0)

    def _bottleneck(self, batch: list[torch.Tensor]) -> torch.Tensor:
        # Bottleneck.forward with the precomputed downsample output as the identity branch.
        x, identity = batch
        block = self.module
        out = bottleneck_activation(block, 1)(block.bn1(block.conv1(x)))
        out = bottleneck_activation(block, 2)(block.bn2(block.conv2(out)))
        out = block.bn3(block.conv3(block.avgpool(out)))
        return bottleneck_activation(block, 3)(out + identity)
