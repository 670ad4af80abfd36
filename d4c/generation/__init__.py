"""Pseudo-image synthesis (SPEC 3): Gaussian noise, BNS, PSE and D4C (PGSI, SCG, PAE).

Layout: ``methods/`` (one module per method, registered by name), shared parts (``priors`` TV,
``pgsi`` text targets, ``scg`` boxes and crops, ``pae`` perturbations, ``schedules``), the loop
(``engine``), ``checkpoint``, ``cache`` (recipes), ``export`` (PNG) and ``synthesis`` (the
run-level entry point :func:`synthesize_for_run`).
"""

from d4c.generation.engine import GenerationResult, generate
from d4c.generation.methods import available_methods, method_class
from d4c.generation.settings import GenerationSettings
from d4c.generation.synthesis import SynthesisOutcome, resolve_method, synthesize, synthesize_for_run

__all__ = ["GenerationResult", "GenerationSettings", "SynthesisOutcome", "available_methods", "generate",
           "method_class", "resolve_method", "synthesize", "synthesize_for_run"]
