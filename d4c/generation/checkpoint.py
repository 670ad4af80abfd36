"""Resumable generation: the full optimisation state, saved atomically every N outer iterations.

A checkpoint holds the images, Adam's state, the per-step random generator's state, the method's
per-image state (targets, boxes), the loss history and the recipe key, so a run killed mid-way
and restarted finishes with the same images as an uninterrupted run (on the same device).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from d4c.errors import D4CError
from d4c.io import load_torch, save_torch


@dataclass
class CheckpointStore:
    """Where the checkpoint of one recipe lives, and the recipe key it must match."""

    path: Path
    key: str

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` (plus the key) atomically."""
        save_torch(self.path, {"key": self.key, **state})

    def load(self, device: torch.device) -> dict[str, Any] | None:
        """The saved state, or None when there is none usable (absent, unreadable, other recipe or device)."""
        if not self.path.is_file():
            return None
        try:
            state = load_torch(self.path, "generation checkpoint", map_location=device)
        except D4CError as exc:  # an unreadable checkpoint only costs a fresh start
            warnings.warn(f"{exc} Ignoring it: generation starts afresh.", stacklevel=2)
            return None
        if state.get("key") != self.key:
            warnings.warn(f"Ignoring generation checkpoint {self.path}: it belongs to another recipe.", stacklevel=2)
            return None
        if state.get("device_type") != torch.device(device).type:
            warnings.warn(f"Ignoring generation checkpoint {self.path}: it was made on {state.get('device_type')}, "
                          f"this run is on {torch.device(device).type} (random streams differ).", stacklevel=2)
            return None
        return state

    def remove(self) -> None:
        """Delete the checkpoint (after the final images are safely stored)."""
        self.path.unlink(missing_ok=True)
