"""One entry point for a run's pseudo images: method choice, prompts, cache, checkpoints, PNGs, timing.

The pipeline calls :func:`synthesize_for_run`; ``scripts/generate.py`` and the benchmarks call
:func:`synthesize` / :func:`d4c.generation.engine.generate` directly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import clip
import torch

from d4c.config import RunConfig
from d4c.data.prompts import load_prompt_file
from d4c.errors import D4CError
from d4c.generation.cache import PseudoImageCache, build_recipe, recipe_key
from d4c.generation.checkpoint import ArtifactStore
from d4c.generation.engine import generate
from d4c.generation.export import save_png_images
from d4c.generation.methods import method_class
from d4c.generation.settings import GenerationSettings
from d4c.models.loading import LoadedModel


@dataclass
class SynthesisOutcome:
    """The pseudo images of a run and how they were obtained."""

    images: torch.Tensor
    """``B x 3 x R x R`` float32, CLIP-normalised pixel space, detached, on the requested device."""
    settings: GenerationSettings
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


def resolve_method(config: RunConfig, loaded: LoadedModel) -> str:
    """The registered method of a run: gaussian (``--dfq`` alone), d4c, bns or pse.

    ``--gen_method baseline`` picks BNS for ResNet image towers and PSE for ViTs; ``bns`` / ``pse``
    are taken as given (and stop with a clear sentence on the wrong family when the method is built).
    """
    if not config.gen_img:
        return "gaussian"
    if config.gen_method == "baseline":
        if isinstance(loaded.model.visual, clip.model.VisionTransformer):
            return "pse"
        if isinstance(loaded.model.visual, clip.model.ModifiedResNet):
            return "bns"
        raise D4CError(f"--gen_method baseline needs a ViT (PSE) or ResNet (BNS) image encoder; {loaded.name} has "
                       f"a {type(loaded.model.visual).__name__}.")
    return config.gen_method


def synthesize(settings: GenerationSettings, loaded: LoadedModel, device: torch.device | str,
               prompts: Sequence[str] | None = None, cache: PseudoImageCache | None = None, force: bool = False,
               img_path: str | Path | None = None, progress: bool = True, verbose: bool = True) -> SynthesisOutcome:
    """Pseudo images for ``settings`` on ``loaded``'s image tower, through the cache when one is given.

    A cache hit (same recipe) skips generation unless ``force``; a miss resumes from the recipe's
    checkpoint when one exists (unless ``force``), generates, stores images and recipe, and
    removes the checkpoint. ``img_path`` receives one PNG per image either way.
    """
    began = time.perf_counter()
    device = torch.device(device)
    say = print if verbose else (lambda *a, **k: None)
    method_class(settings.method).check_model(loaded.model)
    resolution = loaded.resolution
    outcome: SynthesisOutcome
    if not method_class(settings.method).optimizes:
        result = generate(loaded.model, settings, device, prompts, progress=False)
        outcome = SynthesisOutcome(result.images, settings, 0.0)
        say(f"Pseudo images: Gaussian noise N(0, 1), {settings.num_images} images of {resolution} px (seed {settings.seed}).")
    else:
        recipe = build_recipe(settings, loaded.name, loaded.source, resolution, prompts)
        key = recipe_key(recipe)
        stem = cache.stem(key, loaded.name, settings) if cache is not None else None
        stored = cache.load(stem, key) if cache is not None and not force else None
        if stored is not None:
            outcome = SynthesisOutcome(stored["images"].to(device), settings, 0.0, from_cache=True,
                                       cache_path=cache.images_path(stem), key=key, targets=stored.get("targets"),
                                       prompts=prompts)
            say(f"Pseudo images: reusing {settings.num_images} cached {settings.describe()} images "
                f"({settings.gen_iter} iterations, {settings.gen_schedule} schedule) from {outcome.cache_path}.")
        else:
            checkpoint = cache.checkpoint(stem, key) if cache is not None else None
            trained = (trained_store(settings, loaded, prompts, cache)
                       if cache is not None and method_class(settings.method).trains_generator else None)
            if force:
                for store in (checkpoint, trained):
                    if store is not None:
                        store.remove()
            result = generate(loaded.model, settings, device, prompts, checkpoint=checkpoint, progress=progress,
                              trained=trained)
            outcome = SynthesisOutcome(result.images, settings, 0.0, generation_seconds=result.seconds, key=key,
                                       resumed_from=result.resumed_from, loss_history=result.loss_history,
                                       targets=result.targets, prompts=prompts)
            per_iteration = result.seconds / max(result.iterations_run, 1)
            resumed = f", resumed at iteration {result.resumed_from}" if result.resumed_from else ""
            if method_class(settings.method).trains_generator:  # iterations are generator steps, no schedule
                work = (f"a generator trained for {settings.gen_iter} steps of {settings.gen_batch_size} images"
                        f"{resumed if result.iterations_run else ', loaded'}")
            else:
                work = f"{settings.gen_iter} iterations ({settings.gen_schedule} schedule{resumed})"
            say(f"Pseudo images: {settings.describe()}, {settings.num_images} images x {work} in {result.seconds:.1f} s "
                f"({per_iteration:.3f} s/iteration), final loss {outcome.final_loss:.4f}.")
            if cache is not None:
                info = {"seconds": round(result.seconds, 3), "iterations_run": result.iterations_run,
                        "resumed_from": result.resumed_from, "final_loss": outcome.final_loss,
                        "device": device.type, "torch": torch.__version__, "model_name": loaded.name,
                        "model_source": loaded.source}
                outcome.cache_path = cache.save(stem, key, result.images, result.targets, recipe, info)
                checkpoint.remove()
                say(f"Pseudo images cached in {outcome.cache_path}.")
    outcome.prompts = prompts
    if img_path is not None:
        paths = save_png_images(outcome.images, img_path, outcome.captions())
        say(f"Wrote {len(paths)} PNG files to {img_path}.")
    outcome.seconds = time.perf_counter() - began
    return outcome


def run_generation(config: RunConfig, loaded: LoadedModel, num_images: int
                   ) -> tuple[GenerationSettings, list[str] | None, PseudoImageCache | None]:
    """A ``--dfq --gen_img`` run's generation settings, prompts (methods that use them) and cache."""
    method = resolve_method(config, loaded)
    settings = GenerationSettings.from_run_config(config, method, num_images)
    prompts = load_prompt_file(config.custom_file).prompts() if method_class(method).uses_prompts else None
    return settings, prompts, PseudoImageCache.from_flag(config.gen_cache_dir)


def trained_store(settings: GenerationSettings, loaded: LoadedModel, prompts: Sequence[str] | None,
                  cache: PseudoImageCache) -> ArtifactStore:
    """Where ``cache`` keeps the generator a generator-training method trains for ``settings``."""
    recipe = build_recipe(settings, loaded.name, loaded.source, loaded.resolution, prompts)
    return cache.trained_store(recipe, loaded.name, settings)


def synthesize_for_run(config: RunConfig, loaded: LoadedModel, num_images: int,
                       device: torch.device | str) -> torch.Tensor:
    """The pseudo calibration images of a ``--dfq`` run: ``num_images x 3 x R x R`` on ``device``.

    Float32, CLIP-normalised pixel space, detached. ``--gen_img`` off gives seeded N(0, 1) noise
    (never cached); otherwise the method of :func:`resolve_method` runs with the run's generation
    flags, prompts from ``--custom_file`` (D4C, EnhancingDFQ), the ``--gen_cache_dir`` cache and checkpoints
    (``--gen_force`` regenerates), and ``--img_path`` PNG export. Uses its own seeded generators,
    never the global RNG. Raises :class:`D4CError` for a baseline on the wrong family, a bad prompt
    file or a diverged generation.
    """
    settings, prompts, cache = run_generation(config, loaded, num_images)
    outcome = synthesize(settings, loaded, device, prompts, cache=cache, force=config.gen_force,
                         img_path=config.img_path)
    return outcome.images
