"""How one kind of tensor is quantized: a section (``a_qconfig``, ``w_qconfig``) of a quantization config.

Its own module so that the quantizers (:mod:`d4c.quantization.fake_quant`) and the config files
(:mod:`d4c.quantization.qconfig`, which takes the quantizer and observer names from their
registries) both use it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QuantizerConfig:
    """How one kind of tensor (weights or activations) is quantized."""

    quantizer: str
    observer: str
    bit: int
    symmetric: bool
    ch_axis: int
    """-1 per-tensor, 0 per output channel (weights only)."""

    def with_bit(self, bit: int) -> "QuantizerConfig":
        return QuantizerConfig(self.quantizer, self.observer, bit, self.symmetric, self.ch_axis)
