"""Block reconstruction of a calibrated quantized CLIP (docs/method.md, "Reconstruction"): units, caches, steps."""

from d4c.reconstruction.engine import UnitReport, reconstruct, reconstruct_unit

__all__ = ["UnitReport", "reconstruct", "reconstruct_unit"]
