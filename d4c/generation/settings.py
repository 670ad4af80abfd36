"""What one pseudo-image generation is: method, sizes, optimiser hyper-parameters, schedule, seed, method options.

:class:`GenerationSettings` is the one definition of these settings. The run configuration
(:class:`d4c.config.RunConfig`) nests it, and the command line builds its generation flags from
the fields that carry a ``help`` (their metadata) and from the registered methods' own options
(:class:`d4c.generation.methods.base.Option`), whose values live in :attr:`GenerationSettings.options`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from d4c.errors import D4CError

SCHEDULES = ("reference", "batched")
DEFAULT_NUM_IMAGES = 128  # calibrate.visual of the shipped quantization configs


def flag(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field that is also a command-line flag (``--<name>``, or ``--<extra['flag']>``)."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass(frozen=True)
class GenerationSettings:
    """Hyper-parameters of one generation (docs/method.md, "Pseudo-image synthesis"); defaults are the paper's."""

    method: str = flag("d4c", "pseudo-image method: d4c, or baseline (BNS for ResNets, PSE for ViTs); bns / pse "
                              "name the baseline explicitly and stop on the wrong architecture family",
                       flag="gen_method")
    """A registered method name (``d4c``, ``bns``, ``pse``, ``gaussian``, ...) or ``baseline``."""
    gen_batch_size: int = flag(16, "mini-batch size of pseudo-image generation")
    """Images per mini-batch; one optimiser step per mini-batch in the reference schedule."""
    gen_lr: float = flag(0.01, "Adam learning rate of the pseudo-image pixels")
    gen_iter: int = flag(3000, "outer generation iterations")
    """Outer iterations (each visits every mini-batch once)."""
    gen_schedule: str = flag("reference", "reference: one Adam step per mini-batch, as in the paper; batched: all "
                                          "mini-batches in one pass (SCG negatives within each mini-batch) and one "
                                          "step per pass", choices=SCHEDULES)
    gen_groups: int = flag(1, "split the generation into K independent groups of images, each with its own "
                                 "seed (derived from the group index) and optimiser; processes started by torchrun "
                                 "or srun take groups round-robin, with the same images for any number of "
                                 "processes; 1 = the paper's one optimisation over all images", metavar="K")
    """Independent groups of images (1: the reference schedule over all images; part of the recipe only when > 1)."""
    gen_ckpt_every: int = flag(200, "save a generation checkpoint every N outer iterations, 0 for never",
                               metavar="N")
    """Not part of the recipe: how often a resumable checkpoint is written."""
    num_images: int = DEFAULT_NUM_IMAGES
    """B, the number of pseudo images (``calibrate.visual`` in a pipeline run)."""
    seed: int = 0
    """Seeds the initial images, per-image draws (targets, boxes) and per-step noise (the run's seed)."""
    options: dict[str, Any] = field(default_factory=dict)
    """The methods' own options by name (``d4c_config``); a method reads its own, defaults for the missing."""
    compile: str = "off"
    """The run's ``--compile`` (auto, on, off; :mod:`d4c.acceleration`); not part of the recipe."""

    def __post_init__(self) -> None:
        for name in ("num_images", "gen_batch_size", "gen_iter", "gen_lr"):
            if not getattr(self, name) > 0:
                raise D4CError(f"must be positive, got {getattr(self, name)}.", name)
        if not 1 <= self.gen_groups <= self.num_images:
            raise D4CError(f"must be between 1 and the number of images ({self.num_images}), got {self.gen_groups}.",
                           "gen_groups")
        if self.gen_ckpt_every < 0:
            raise D4CError(f"must be 0 (no checkpoints) or more, got {self.gen_ckpt_every}.", "gen_ckpt_every")
        if self.gen_schedule not in SCHEDULES:
            raise D4CError(f"must be one of {', '.join(SCHEDULES)}, got {self.gen_schedule!r}.", "gen_schedule")

    def with_options(self, **values: Any) -> "GenerationSettings":
        """A copy with these method options set (``with_options(d4c_config=1)``)."""
        return replace(self, options={**self.options, **values})

    @property
    def steps_per_iteration(self) -> int:
        """Optimiser steps per outer iteration: one per mini-batch, or one per pass when batched."""
        if self.gen_schedule == "batched":
            return 1
        return -(-self.num_images // self.gen_batch_size)

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain data, the method options beside the other fields (``d4c_config``)."""
        out = asdict(self)
        return {**out, **out.pop("options")}
