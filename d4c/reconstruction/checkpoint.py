"""Resumable reconstruction: the model after each finished unit, saved now and then, picked up again.

A checkpoint holds the quantized model's state (hardened weights, scales), the names and reports
of the finished units, the random states (row sampling and QDrop) and a fingerprint of the run
(model, config, seed, calibration data). A run that finds a checkpoint with the same fingerprint
loads it and continues with the next unit; the result is the same as an uninterrupted run.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from d4c.errors import D4CError
from d4c.io import load_torch, save_torch

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "d4c-reconstruction-checkpoint/1"


def recon_checkpoint_path(output: str | os.PathLike) -> Path:
    """Where an interrupted reconstruction of the run writing ``output`` keeps its progress."""
    output = Path(output)
    return output.parent / (output.stem + ".recon-ckpt.pt")


class ReconCheckpoint:
    """Saves progress to ``path`` at most every ``interval_s`` seconds (0: after every unit)."""

    def __init__(self, path: str | os.PathLike, fingerprint: dict[str, Any], interval_s: float = 300.0):
        self.path, self.fingerprint, self.interval_s = Path(path), fingerprint, interval_s
        self._last_save = time.monotonic()

    def load(self, model: nn.Module, generator: torch.Generator) -> tuple[list[str], list[dict]]:
        """Restore a matching checkpoint into ``model``/``generator``; return finished unit names and reports."""
        if not self.path.is_file():
            return [], []
        try:
            saved = load_torch(self.path, "reconstruction checkpoint", format=CHECKPOINT_FORMAT)
        except D4CError as exc:  # an unreadable checkpoint is ignored, not fatal
            warnings.warn(f"{exc} Ignoring it: reconstruction starts from the first unit.", stacklevel=2)
            return [], []
        if saved.get("fingerprint") != self.fingerprint:
            warnings.warn(f"Ignoring reconstruction checkpoint {self.path}: it belongs to another run.", stacklevel=2)
            return [], []
        model.load_state_dict(saved["state_dict"])
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        if torch.cuda.is_available() and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        logger.info(f"Resuming reconstruction from {self.path}: {len(saved['done'])} units already done.")
        return list(saved["done"]), list(saved["reports"])

    def maybe_save(self, model: nn.Module, generator: torch.Generator, done: list[str], reports: list[dict],
                   force: bool = False) -> None:
        """Save when ``interval_s`` has passed since the last save (or when ``force``)."""
        if not force and time.monotonic() - self._last_save < self.interval_s:
            return
        save_torch(self.path, {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint,
            "done": list(done),
            "reports": list(reports),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        })
        self._last_save = time.monotonic()

    def remove(self) -> None:
        """Delete the checkpoint (the reconstruction finished)."""
        if self.path.exists():
            self.path.unlink()
