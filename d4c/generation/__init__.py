"""Pseudo-image synthesis (docs/method.md, "Pseudo-image synthesis"): Gaussian noise, BNS, PSE and D4C (PGSI, SCG, PAE).

Layout: ``methods/`` (one module per method, registered by name), ``settings`` (what one
generation is), ``rows`` (paper rows <-> settings), shared parts (``priors`` TV, ``pgsi`` text
targets, ``scg`` boxes and crops, ``pae`` perturbations, ``schedules``), the loop (``engine``),
``checkpoint``, ``cache`` (recipes), ``export`` (PNG) and ``synthesis`` (:func:`synthesize`,
the entry point the pipeline calls).
"""

from d4c.generation.engine import GenerationResult, generate
from d4c.generation.methods import available_methods, method_class, resolve_method
from d4c.generation.rows import generation_rows, row_of, settings_for_row
from d4c.generation.settings import GenerationSettings
from d4c.generation.synthesis import SynthesisOutcome, synthesize

__all__ = ["GenerationResult", "GenerationSettings", "SynthesisOutcome", "available_methods", "generate",
           "generation_rows", "method_class", "resolve_method", "row_of", "settings_for_row", "synthesize"]
