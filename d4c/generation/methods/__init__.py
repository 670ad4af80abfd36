"""Pseudo-image methods, each one module (or package), registered by name (gaussian, bns, pse, d4c, enhancing_dfq).

A new method is a module here whose class is ``@register``-ed, imported below; nothing else
names it (docs/design.md, "Adding a generation method").
"""

from d4c.generation.methods import bns, d4c, enhancing_dfq, gaussian, pse  # noqa: F401  (registers the methods)
from d4c.generation.methods.base import (BASELINE, GenerationMethod, Option, available_methods, method_choices,
                                         method_class, method_options, option_owner, register,
                                         resolve_method)

__all__ = ["BASELINE", "GenerationMethod", "Option", "available_methods", "method_choices", "method_class",
           "method_options", "option_owner", "register", "resolve_method"]
