"""The paper's rows of pseudo images by label and back: ``gaussian``, ``baseline``, ``bns``, ``pse``, ``d4c0``-``d4c3``.

A row label names what a run's calibration images are. Generated rows come from the registry:
each method lists the rows it makes (:meth:`~d4c.generation.methods.base.GenerationMethod.rows`,
D4C's four ablations, one row for every other method) and ``baseline`` is the family's baseline.
:func:`settings_for_row` and :func:`row_of` are inverse to each other; the run-level rows ``fp``
and ``real`` (no pseudo images) are :class:`d4c.config.RunConfig`'s.
"""

from __future__ import annotations

from dataclasses import replace

from d4c.generation.methods import BASELINE, available_methods, method_class
from d4c.generation.settings import GenerationSettings


def generation_rows() -> list[str]:
    """Every row label of pseudo images: each registered method's rows, then ``baseline``."""
    return [label for name in available_methods() for label in method_class(name).rows()] + [BASELINE]


def settings_for_row(row: str, base: GenerationSettings | None = None) -> GenerationSettings:
    """``base`` (the paper's defaults when None) with the method and options of ``row``.

    ``settings_for_row("d4c1")`` is D4C with ``d4c_config`` 1; ``settings_for_row("baseline")``
    leaves the choice of BNS or PSE to the model (:func:`~d4c.generation.methods.resolve_method`).
    """
    base = base or GenerationSettings()
    if row == BASELINE:
        return replace(base, method=BASELINE)
    for name in available_methods():
        selects = method_class(name).rows().get(row)
        if selects is not None:
            return replace(base, method=name, options={**base.options, **selects})
    raise ValueError(f"unknown row {row!r}; the rows of pseudo images are {', '.join(generation_rows())}")


def row_of(settings: GenerationSettings) -> str:
    """The row label of ``settings``: ``baseline``, or its method's row (``d4c3``, ``pse``, ``gaussian``)."""
    if settings.method == BASELINE:
        return BASELINE
    return method_class(settings.method).row(settings)
