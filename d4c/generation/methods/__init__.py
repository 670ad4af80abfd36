"""Pseudo-image methods, each one module, registered by name (gaussian, bns, pse, d4c, enhancing_dfq)."""

from d4c.generation.methods import bns, d4c, enhancing_dfq, gaussian, pse  # noqa: F401  (registers the methods)
from d4c.generation.methods.base import GenerationMethod, available_methods, method_class, register

__all__ = ["GenerationMethod", "available_methods", "method_class", "register"]
