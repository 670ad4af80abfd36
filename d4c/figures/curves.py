"""``curves``: the generation loss per outer iteration of each method, and the reconstruction loss per unit.

Generation: one panel per method (their objectives have different scales and signs: D4C's
cross-entropy, BNS's statistics distance, PSE's negative entropy), the mean mini-batch loss of every
outer iteration as the cache keeps it. Reconstruction: one panel per tower, each unit's loss on
all its cached rows with round-to-nearest weights (before, dashed) and after reconstruction
(solid), one colour per result file; a log scale, units in forward order.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from d4c.figures.output import new_figure, row_color, style_layer_axis
from d4c.figures.names import TOWERS, row_name, run_label, short_layer_name, tower_of
from d4c.figures.sources import CacheEntry, bits_label

def curves_figure(entries: Sequence[CacheEntry], records: Sequence[dict[str, Any]]) -> tuple[Any, dict[str, Any]]:
    """The figure and its data from cache entries with a loss history and result records with
    ``reconstruction_units`` (either may be empty, not both)."""
    towers = [t for t in TOWERS if any(tower_of(u["name"]) == t for r in records
                                          for u in r.get("reconstruction_units") or [])]
    generation_columns = min(3, max(len(entries), 1))
    generation_rows = math.ceil(len(entries) / generation_columns) if entries else 0
    rows = generation_rows + len(towers)
    figure = new_figure(4.2 * max(generation_columns, 2), 2.6 * generation_rows + 3.4 * len(towers))
    layout = figure.add_gridspec(rows, generation_columns)
    data: dict[str, Any] = {"generation": [], "reconstruction": []}

    for i, entry in enumerate(entries):
        r, c = divmod(i, generation_columns)
        ax = figure.add_subplot(layout[r, c])
        history = entry.loss_history.tolist()
        ax.plot(range(1, len(history) + 1), history, color=row_color(entry.row), linewidth=1.2)
        ax.set_title(f"{row_name(entry.row)} ({entry.recipe.get('method')})", fontsize=9)
        ax.set_xlabel("outer iteration", fontsize=8)
        ax.set_ylabel("generation loss", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        data["generation"].append({"method": entry.row, "cache_file": str(entry.path), "loss": history,
                                   "first": history[0], "last": history[-1], "min": min(history)})

    for t, tower in enumerate(towers):
        ax = figure.add_subplot(layout[generation_rows + t, :])
        names: list[str] = []
        for record in records:
            units = [u for u in record.get("reconstruction_units") or [] if tower_of(u["name"]) == tower]
            if not units:
                continue
            names = names if len(names) >= len(units) else [u["name"] for u in units]
            color = row_color(str(record.get("method")))
            x = range(len(units))
            label = run_label(str(record.get("method")), bits_label(record))
            ax.plot(x, [u["error_before"] for u in units], linestyle="--", color=color, linewidth=1, alpha=0.8)
            ax.plot(x, [u["error_after"] for u in units], linestyle="-", marker=".", color=color, linewidth=1.2,
                    label=label)
            before = sum(u["error_before"] for u in units)
            after = sum(u["error_after"] for u in units)
            data["reconstruction"].append({
                "tower": tower, "method": record.get("method"), "label": label, "result": record.get("_path"),
                "units": [{"name": u["name"], "error_before": u["error_before"], "error_after": u["error_after"]}
                          for u in units],
                "sum_before": before, "sum_after": after,
                "units_improved": sum(u["error_after"] < u["error_before"] for u in units),
            })
        ax.set_yscale("log")
        style_layer_axis(ax, [short_layer_name(n) for n in names], f"{tower} encoder unit (forward order)",
                         "reconstruction loss\n(dashed: before, solid: after)")
    figure.tight_layout()
    return figure, data
