"""What one pseudo-image generation is: method, sizes, optimiser hyper-parameters, schedule, seed.

:class:`GenerationSettings` is the generation part of a :class:`d4c.config.RunConfig` plus the
number of images (``calibrate.visual`` of the quantization config), named like the flags.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from d4c.config import RunConfig, check_generation_values
from d4c.errors import D4CError

METHOD_NAMES = ("gaussian", "bns", "pse", "d4c")
DEFAULT_NUM_IMAGES = 128  # calibrate.visual of the shipped quantization configs


@dataclass(frozen=True)
class GenerationSettings:
    """Hyper-parameters of one generation (SPEC 3); defaults are the paper's."""

    method: str = "d4c"
    """gaussian, bns, pse or d4c (``--gen_method baseline`` is resolved to bns / pse by family first)."""
    num_images: int = DEFAULT_NUM_IMAGES
    """B, the number of pseudo images (``calibrate.visual``)."""
    gen_batch_size: int = 16
    """Images per mini-batch; one optimiser step per mini-batch in the reference schedule."""
    gen_lr: float = 0.01
    """Adam learning rate of the pixels."""
    gen_iter: int = 3000
    """Outer iterations (each visits every mini-batch once)."""
    d4c_config: int = 3
    """D4C ablation: 0 PGSI, 1 PGSI+SCG, 2 PGSI+PAE, 3 PGSI+SCG+PAE (ignored by other methods)."""
    gen_schedule: str = "reference"
    """reference (one step per mini-batch) or batched (one step per pass over all mini-batches)."""
    seed: int = 0
    """Seeds the initial images, per-image draws (targets, boxes) and per-step noise."""
    gen_ckpt_every: int = 200
    """Checkpoint every this many outer iterations (0: never); not part of the recipe."""
    compile: str = "off"
    """``--compile``: auto, on or off (:mod:`d4c.acceleration`); not part of the recipe."""

    def __post_init__(self) -> None:
        if self.method not in METHOD_NAMES:
            raise D4CError(f"Generation method must be one of {', '.join(METHOD_NAMES)}, got {self.method!r}.")
        if not self.num_images > 0:
            raise D4CError(f"--num_images must be positive, got {self.num_images}.")
        check_generation_values(self.gen_batch_size, self.gen_iter, self.gen_lr, self.d4c_config, self.gen_schedule)

    @classmethod
    def from_run_config(cls, config: RunConfig, method: str, num_images: int) -> "GenerationSettings":
        """The settings of a pipeline run whose (resolved) method is ``method``."""
        return cls(method=method, num_images=num_images, gen_batch_size=config.gen_batch_size, gen_lr=config.gen_lr,
                   gen_iter=config.gen_iter, d4c_config=config.d4c_config, gen_schedule=config.gen_schedule,
                   seed=config.seed, gen_ckpt_every=config.gen_ckpt_every, compile=config.compile)

    @property
    def steps_per_iteration(self) -> int:
        """Optimiser steps per outer iteration: one per mini-batch, or one per pass when batched."""
        if self.gen_schedule == "batched":
            return 1
        return -(-self.num_images // self.gen_batch_size)

    def describe(self) -> str:
        """A short human label, e.g. ``d4c config 3`` or ``pse``."""
        return f"d4c config {self.d4c_config}" if self.method == "d4c" else self.method

    def as_dict(self) -> dict:
        return asdict(self)
