"""Block reconstruction of a calibrated quantized CLIP (SPEC 4.5): units, caches, optimisation."""

from d4c.reconstruction.engine import UnitReport, reconstruct, reconstruct_unit

__all__ = ["UnitReport", "reconstruct", "reconstruct_unit"]
