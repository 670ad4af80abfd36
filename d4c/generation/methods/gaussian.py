"""Gaussian noise: the initial ``N(0, 1)`` images themselves (the paper's "Gaussian noise" row, ``--dfq`` alone).

The engine draws them (:func:`d4c.generation.engine.initial_images`), the one place noise images are made.
"""

from __future__ import annotations

from d4c.generation.methods.base import GenerationMethod, register


@register
class GaussianNoise(GenerationMethod):
    """No optimisation: the engine returns its seeded initial images unchanged."""

    name = "gaussian"
    optimizes = False
