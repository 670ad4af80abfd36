"""Markdown tables in the paper's layout: rows and columns picked from result rows, mean ± std over seeds.

A :class:`Pivot` is one table: its row headers and predicates, its column headers and predicates,
the value shown (top-1 in percent, or seconds). A cell holds the runs matching its row and column;
one value per seed (the newest run when a seed ran twice); it shows their mean, and ± the sample
standard deviation (ddof = 1) when there are several seeds; a cell without runs shows ``—``.
:class:`Gain` rows show the difference of two rows' means (D4C over the baseline).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

Row = dict[str, Any]
Predicate = Callable[[Row], bool]
MISSING = "—"


def where(**wanted: Any) -> Predicate:
    """A predicate: every named column has the value (a tuple: any of its values)."""
    def test(row: Row) -> bool:
        for key, value in wanted.items():
            options = value if isinstance(value, tuple) else (value,)
            if row.get(key) not in options and str(row.get(key)) not in map(str, options):
                return False
        return True
    return test


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for one value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


@dataclass
class Gain:
    """A row showing ``minuend − subtrahend`` per column; rows are named by their label cells joined by `` | ``."""

    label: list[str]
    minuend: str
    subtrahend: str


@dataclass
class Pivot:
    """One Markdown table."""

    row_headers: list[str]
    rows: list[tuple]
    """``(label cells, predicate)``, or ``(label cells, predicate, value column)`` for a row of another value."""
    columns: list[tuple[str, Predicate]]
    select: Predicate = lambda row: True
    value: str = "acc1"
    scale: float = 100.0
    digits: int = 2
    gains: list[Gain] = field(default_factory=list)
    skip_empty_rows: bool = False

    def values(self, records: list[Row], row_test: Predicate, column_test: Predicate = lambda r: True,
               value: str | None = None) -> list[float]:
        """The cell's value per seed (the newest record of each seed)."""
        value = value or self.value
        by_seed: dict[Any, Row] = {}
        for r in records:
            if self.select(r) and row_test(r) and column_test(r) and r.get(value) not in ("", None):
                seed = r.get("seed")
                if seed not in by_seed or str(r.get("created", "")) > str(by_seed[seed].get("created", "")):
                    by_seed[seed] = r
        return [float(by_seed[s][value]) * self.scale for s in sorted(by_seed, key=str)]

    def format(self, values: list[float]) -> str:
        if not values:
            return MISSING
        mean, std = mean_std(values)
        return f"{mean:.{self.digits}f}" + (f" ± {std:.{self.digits}f}" if std is not None else "")

    def render(self, records: list[Row]) -> str:
        header = [*self.row_headers, *(label for label, _ in self.columns)]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        means: dict[str, list[float | None]] = {}
        for label, test, *value in self.rows:
            cells = [self.values(records, test, column, *value) for _, column in self.columns]
            if self.skip_empty_rows and not any(cells):
                continue
            means.setdefault(" | ".join(label), [mean_std(c)[0] if c else None for c in cells])
            lines.append("| " + " | ".join([*label, *(self.format(c) for c in cells)]) + " |")
        for gain in self.gains:
            a, b = means.get(gain.minuend), means.get(gain.subtrahend)
            if a is None or b is None:
                continue
            cells = [MISSING if x is None or y is None else f"{x - y:+.{self.digits}f}" for x, y in zip(a, b)]
            lines.append("| " + " | ".join([*gain.label, *cells]) + " |")
        return "\n".join(lines)


def seeds_of(records: list[Row], test: Predicate) -> list[int]:
    """The seeds of the records passing ``test``, sorted."""
    return sorted({int(r["seed"]) for r in records if test(r) and str(r.get("seed", "")).lstrip("-").isdigit()})


def distinct(records: list[Row], test: Predicate, column: str) -> list[str]:
    """The distinct non-empty values of ``column`` among the records passing ``test``, sorted."""
    return sorted({str(r[column]) for r in records if test(r) and r.get(column) not in ("", None)},
                  key=lambda v: (len(v), v))
