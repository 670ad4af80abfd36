"""How figures name things: paper rows, encoder towers, layers and units."""

from __future__ import annotations

from typing import Any, Iterable

ROW_ORDER = ("fp", "real", "gaussian", "baseline", "bns", "pse", "d4c0", "d4c1", "d4c2", "d4c3", "enhancing_dfq")
ROW_NAMES = {"fp": "FP", "real": "real data", "gaussian": "Gaussian noise", "baseline": "BNS / PSE",
             "bns": "BNS", "pse": "PSE", "d4c0": "D4C 0 (PGSI)", "d4c1": "D4C 1 (+SCG)", "d4c2": "D4C 2 (+PAE)",
             "d4c3": "D4C 3 (+SCG+PAE)", "enhancing_dfq": "EnhancingDFQ"}


def row_name(row: str) -> str:
    """How a figure names a row (``d4c3`` -> ``D4C 3 (+SCG+PAE)``)."""
    return ROW_NAMES.get(row, row)


def run_label(method: str, bits: tuple[int, int] | None = None, recon: bool | None = None) -> str:
    """``W4A4 D4C 3 (+SCG+PAE), recon``: a quantized run by its bit widths, row and reconstruction."""
    prefix = f"W{bits[0]}A{bits[1]} " if bits else ""
    return f"{prefix}{row_name(method)}{', recon' if recon else ''}"


def row_rank(row: str) -> tuple[int, str]:
    """Sort key of a row: the paper's order, unknown rows last by name."""
    return (ROW_ORDER.index(row) if row in ROW_ORDER else len(ROW_ORDER), row)


def sort_by_row(items: Iterable[Any], key=lambda x: x) -> list[Any]:
    """``items`` in the paper's row order (unknown rows last, by name)."""
    return sorted(items, key=lambda item: row_rank(key(item)))


TOWERS = ("image", "text")


def tower_of(name: str) -> str:
    """``image`` for a module or unit of the image encoder (``visual.…``), ``text`` otherwise."""
    return "image" if name.startswith("visual.") else "text"


def short_layer_name(name: str) -> str:
    """``visual.transformer.resblocks.3.mlp.c_fc`` -> ``3.mlp.c_fc``; ``visual.layer2.0.conv1`` -> ``layer2.0.conv1``."""
    name = name.removeprefix("visual.").removeprefix("transformer.").removeprefix("resblocks.")
    return name.replace(".attn.", ".").replace(".core.", ".").replace("attnpool.", "pool.")
