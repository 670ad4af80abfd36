"""Writing a figure: a headless matplotlib ``Figure``, its PNG and the numbers behind it as JSON, atomically.

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas directly (never
``pyplot``), so nothing needs a display and no global figure state is kept between calls.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from d4c.errors import D4CError
from d4c.io import atomic_path, write_json

DPI = 100
COLORS = {"fp": "black", "real": "#555555", "gaussian": "#8c8c8c", "baseline": "#d62728", "bns": "#d62728",
          "pse": "#d62728", "d4c0": "#9ecae1", "d4c1": "#4292c6", "d4c2": "#2171b5", "d4c3": "#08306b",
          "enhancing_dfq": "#2ca02c"}
EXTRA_COLORS = ("#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")


def row_color(row: str) -> str:
    """A fixed colour per paper row (D4C's configs in shades of blue, the baselines red)."""
    if row in COLORS:
        return COLORS[row]
    return EXTRA_COLORS[sum(map(ord, row)) % len(EXTRA_COLORS)]


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches on the Agg canvas (headless)."""
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def check_output(path: str | os.PathLike) -> Path:
    """``path`` can receive the PNG (and the JSON beside it): a ``.png`` name in a writable folder.

    Checked before anything is read or computed, so a bad ``--output`` costs nothing.
    """
    path = Path(path).expanduser()
    if path.suffix.lower() != ".png":
        raise D4CError(f"{path} must name a .png file (the numbers go to the .json beside it).", "output")
    if path.is_dir():
        raise D4CError(f"{path} is a folder; name a .png file.", "output")
    anchor = path.absolute().parent
    while not anchor.exists() and anchor != anchor.parent:
        anchor = anchor.parent
    if not anchor.is_dir() or not os.access(anchor, os.W_OK | os.X_OK):
        raise D4CError(f"{path} cannot be written: {anchor} is not a writable folder.", "output")
    return path


def save_figure(figure: Figure, data: dict[str, Any], path: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``figure`` as ``path`` (PNG) and ``data`` as the ``.json`` beside it, each atomically."""
    path = Path(path)
    json_path = path.with_suffix(".json")
    png = io.BytesIO()  # rendered first: a drawing error leaves no file behind
    figure.savefig(png, format="png", dpi=DPI, bbox_inches="tight", pil_kwargs={"optimize": True})
    write_json(json_path, data)
    with atomic_path(path) as tmp:
        tmp.write_bytes(png.getvalue())
    return path, json_path


def style_layer_axis(ax: Any, tick_labels: list[str], xlabel: str, ylabel: str) -> None:
    """The per-layer panels' common look: one rotated tick per layer in forward order, small labels, a grid."""
    ax.set_xticks(range(len(tick_labels)))
    ax.set_xticklabels(tick_labels, rotation=90, fontsize=6)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
