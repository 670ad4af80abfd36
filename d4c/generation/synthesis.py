"""One entry point for a set of pseudo images: method resolution, cache, checkpoints, PNGs, timing.

The pipeline, ``scripts/generate.py`` and the benchmarks call :func:`synthesize` (the benchmarks
that time single iterations call :func:`d4c.generation.engine.generate` directly).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import torch

from d4c.generation.cache import PseudoImageCache, build_recipe, recipe_key
from d4c.generation.engine import generate
from d4c.generation.export import save_png_images
from d4c.generation.methods import method_class, resolve_method
from d4c.generation.rows import row_of
from d4c.generation.settings import GenerationSettings
from d4c.models.loading import LoadedModel

logger = logging.getLogger(__name__)


@dataclass
class SynthesisOutcome:
    """The pseudo images of a run and how they were obtained."""

    images: torch.Tensor
    """``B x 3 x R x R`` float32, CLIP-normalised pixel space, detached, on the requested device."""
    settings: GenerationSettings
    """The settings the images were made with (``baseline`` resolved to the registered method)."""
    seconds: float
    """Wall-clock seconds of the whole call (cache look-up, generation, saving, PNG export)."""
    generation_seconds: float = 0.0
    """Seconds of optimisation in this call (0 on a cache hit and for Gaussian noise)."""
    from_cache: bool = False
    cache_path: Path | None = None
    key: str | None = None
    resumed_from: int = 0
    loss_history: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    targets: torch.Tensor | None = None
    prompts: Sequence[str] | None = None

    @property
    def final_loss(self) -> float | None:
        return float(self.loss_history[-1]) if len(self.loss_history) else None

    def captions(self) -> list[str] | None:
        """D4C's target prompt of each image."""
        if self.targets is None or not self.prompts:
            return None
        return [self.prompts[int(k)] for k in self.targets]


def _generate_through_cache(settings: GenerationSettings, loaded: LoadedModel, device: torch.device,
                            prompts: Sequence[str] | None, cache: PseudoImageCache | None, force: bool,
                            progress: bool) -> SynthesisOutcome:
    recipe = build_recipe(settings, loaded.name, loaded.source, loaded.resolution, prompts, loaded.model_type)
    key = recipe_key(recipe)
    stem = cache.stem(key, loaded.name, settings) if cache is not None else None
    stored = cache.load(stem, key) if cache is not None and not force else None
    label = row_of(settings)
    if stored is not None:
        outcome = SynthesisOutcome(stored["images"].to(device), settings, 0.0, from_cache=True,
                                   cache_path=cache.images_path(stem), key=key, targets=stored.get("targets"))
        if stored.get("loss_history") is not None:  # entries written before the history was kept lack it
            outcome.loss_history = stored["loss_history"]
        logger.info(f"Pseudo images: reusing {settings.num_images} cached {label} images ({settings.gen_iter} "
                    f"iterations, {settings.gen_schedule} schedule) from {outcome.cache_path}.")
        return outcome
    checkpoint = cache.checkpoint(stem, key) if cache is not None else None
    if checkpoint is not None and force:
        checkpoint.remove()
    result = generate(loaded.model, settings, device, prompts, checkpoint=checkpoint, progress=progress)
    outcome = SynthesisOutcome(result.images, settings, 0.0, generation_seconds=result.seconds, key=key,
                               resumed_from=result.resumed_from, loss_history=result.loss_history,
                               targets=result.targets)
    per_iteration = result.seconds / max(result.iterations_run, 1)
    resumed = f", resumed at iteration {result.resumed_from}" if result.resumed_from else ""
    logger.info(f"Pseudo images: {label}, {settings.num_images} images x {settings.gen_iter} iterations "
                f"({settings.gen_schedule} schedule{resumed}) in {result.seconds:.1f} s ({per_iteration:.3f} "
                f"s/iteration), final loss {outcome.final_loss:.4f}.")
    if cache is not None:
        info = {"seconds": round(result.seconds, 3), "iterations_run": result.iterations_run,
                "resumed_from": result.resumed_from, "final_loss": outcome.final_loss, "device": device.type,
                "torch": torch.__version__, "model_name": loaded.name, "model_source": loaded.source}
        outcome.cache_path = cache.save(stem, key, result.images, result.targets, recipe, info,
                                        loss_history=result.loss_history)
        checkpoint.remove()
        logger.info(f"Pseudo images cached in {outcome.cache_path}.")
    return outcome


def synthesize(settings: GenerationSettings, loaded: LoadedModel, device: torch.device | str,
               prompts: Sequence[str] | None = None, cache: PseudoImageCache | None = None, force: bool = False,
               img_path: str | Path | None = None, progress: bool = True) -> SynthesisOutcome:
    """Pseudo images for ``settings`` on ``loaded``'s image tower, through the cache when one is given.

    A cache hit (same recipe) skips generation unless ``force``; a miss resumes from the recipe's
    checkpoint when one exists (unless ``force``), generates, stores images and recipe, and
    removes the checkpoint. Gaussian noise is drawn, never cached. Generation uses its own seeded
    generators, never the global RNG.

    Args:
        settings: what to generate; ``method`` ``baseline`` becomes BNS or PSE by the image tower's family.
        loaded: the full-precision model (its name and source identify it in the cache recipe).
        device: where the images are made and returned.
        prompts: the generation prompts (every template x every class name of a prompt file; D4C uses them).
        cache: the recipe cache, or None for none (no checkpoints either).
        force: ignore a cached result and any checkpoint of this recipe.
        img_path: a folder that receives one PNG per image (and D4C's ``captions.json``).
        progress: show a progress bar while generating.

    Raises:
        D4CError: for a method that does not fit the model's family, or a diverged generation.
    """
    began = time.perf_counter()
    device = torch.device(device)
    settings = replace(settings, method=resolve_method(settings.method, loaded.model))
    method = method_class(settings.method)
    method.check_model(loaded.model)
    if method.optimizes:
        outcome = _generate_through_cache(settings, loaded, device, prompts, cache, force, progress)
    else:
        result = generate(loaded.model, settings, device, prompts, progress=False)
        outcome = SynthesisOutcome(result.images, settings, 0.0)
        logger.info(f"Pseudo images: Gaussian noise N(0, 1), {settings.num_images} images of {loaded.resolution} px "
                    f"(seed {settings.seed}).")
    outcome.prompts = prompts
    if img_path is not None:
        family = loaded.family
        paths = save_png_images(outcome.images, img_path, outcome.captions(), family.mean, family.std)
        logger.info(f"Wrote {len(paths)} PNG files to {img_path}.")
    outcome.seconds = time.perf_counter() - began
    return outcome
