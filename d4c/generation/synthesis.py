"""One entry point for a set of pseudo images: method resolution, cache, checkpoints, PNGs, timing.

The pipeline, ``scripts/generate.py`` and the benchmarks call :func:`synthesize` (the benchmarks
that time single iterations call :func:`d4c.generation.engine.generate` directly).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from d4c.errors import D4CError
from d4c.generation.cache import PseudoImageCache, build_recipe, group_recipe, recipe_key
from d4c.generation.checkpoint import ArtifactStore
from d4c.generation.engine import generate
from d4c.generation.export import save_png_images
from d4c.generation.lock import EntryLock
from d4c.generation.methods import method_class, resolve_method
from d4c.generation.rows import row_of
from d4c.generation.settings import GenerationSettings
from d4c.models.loading import LoadedModel
from d4c.runtime import ProcessShare

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
    complete: bool = True
    """False for a process of a shared split generation other than rank 0: ``images`` are its groups only."""
    generator: torch.nn.Module | None = None
    """The generator a generator-training method trained in this call (None on a cache hit and for the others)."""
    trained_store: ArtifactStore | None = None
    """Where the cache keeps that method's trained generator (None without a cache and for the others)."""

    @property
    def final_loss(self) -> float | None:
        return float(self.loss_history[-1]) if len(self.loss_history) else None

    def captions(self) -> list[str] | None:
        """Each image's target prompt (D4C; EnhancingDFQ: its target's main prompt)."""
        if self.targets is None or not self.prompts:
            return None
        return [self.prompts[int(k)] for k in self.targets]


def _hit(stored: dict, settings: GenerationSettings, device: torch.device, cache: PseudoImageCache, stem: str,
         key: str) -> SynthesisOutcome:
    outcome = SynthesisOutcome(stored["images"].to(device), settings, 0.0, from_cache=True,
                               cache_path=cache.images_path(stem), key=key, targets=stored.get("targets"))
    if stored.get("loss_history") is not None:  # entries written before the history was kept lack it
        outcome.loss_history = stored["loss_history"]
    return outcome


def _generate_entry(settings: GenerationSettings, loaded: LoadedModel, device: torch.device,
                    prompts: Sequence[str] | None, cache: PseudoImageCache | None, force: bool, progress: bool,
                    recipe: dict, stem: str | None, lock: EntryLock | None = None) -> SynthesisOutcome:
    """One cache entry: reused when stored, else generated under its lock (waiting while another process
    generates it, then reusing its images), checkpointed, stored. ``lock`` is the entry's lock if already held."""
    key = recipe_key(recipe)
    label = row_of(settings)
    trains_generator = method_class(settings.method).trains_generator
    trained = cache.trained_store(recipe, loaded.name, settings) if cache is not None and trains_generator else None
    stored = cache.load(stem, key) if cache is not None and not force else None
    if stored is None and cache is not None:
        lock = lock or cache.lock(stem)
        if not lock.held:
            lock.acquire()
    try:
        if stored is None and cache is not None and not force:
            stored = cache.load(stem, key)  # made by the process we waited for
        if stored is not None:
            outcome = _hit(stored, settings, device, cache, stem, key)
            outcome.trained_store = trained
            logger.info(f"Pseudo images: reusing {settings.num_images} cached {label} images ({settings.gen_iter} "
                        f"iterations, {settings.gen_schedule} schedule) from {outcome.cache_path}.")
            return outcome
        checkpoint = cache.checkpoint(stem, key) if cache is not None else None
        if force:
            for store in (checkpoint, trained):
                if store is not None:
                    store.remove()
        result = generate(loaded.model, settings, device, prompts, checkpoint=checkpoint, progress=progress,
                          trained=trained)
        outcome = SynthesisOutcome(result.images, settings, 0.0, generation_seconds=result.seconds, key=key,
                                   resumed_from=result.resumed_from, loss_history=result.loss_history,
                                   targets=result.targets, generator=result.generator, trained_store=trained)
        per_iteration = result.seconds / max(result.iterations_run, 1)
        resumed = f", resumed at iteration {result.resumed_from}" if result.resumed_from else ""
        if trains_generator:  # its iterations are generator steps; there is no pixel schedule
            work = (f"a generator trained for {settings.gen_iter} steps of {settings.gen_batch_size} images"
                    f"{resumed if result.iterations_run else ', loaded'}")
        else:
            work = f"{settings.gen_iter} iterations ({settings.gen_schedule} schedule{resumed})"
        logger.info(f"Pseudo images: {label}, {settings.num_images} images x {work} in {result.seconds:.1f} s "
                    f"({per_iteration:.3f} s/iteration), final loss {outcome.final_loss:.4f}.")
        if cache is not None:
            info = {"seconds": round(result.seconds, 3), "iterations_run": result.iterations_run,
                    "resumed_from": result.resumed_from, "final_loss": outcome.final_loss, "device": device.type,
                    "torch": torch.__version__, "model_name": loaded.name, "model_source": loaded.source}
            outcome.cache_path = cache.save(stem, key, result.images, result.targets, recipe, info,
                                            loss_history=result.loss_history)
            checkpoint.remove()
            logger.info(f"Pseudo images cached in {outcome.cache_path}.")
        return outcome
    finally:
        if lock is not None:
            lock.release()


def group_seed(seed: int, group: int) -> int:
    """The seed of group ``group`` of a split generation: distinct for every (seed, group), device-independent."""
    return int(np.random.SeedSequence([seed, group]).generate_state(1)[0])


def group_sizes(num_images: int, groups: int) -> list[int]:
    """Images per group: as equal as possible, the first groups one larger."""
    return [num_images // groups + (1 if g < num_images % groups else 0) for g in range(groups)]


def _recorded_seconds(cache: PseudoImageCache | None, stem: str | None, outcome: SynthesisOutcome) -> float:
    """The optimisation seconds of an entry: this call's, or those its recipe file recorded."""
    if not outcome.from_cache or cache is None:
        return outcome.generation_seconds
    try:
        return float(json.loads(cache.recipe_path(stem).read_text()).get("seconds") or 0.0)
    except (OSError, ValueError):
        return 0.0


def _generate_groups(settings: GenerationSettings, loaded: LoadedModel, device: torch.device,
                     prompts: Sequence[str] | None, cache: PseudoImageCache | None, force: bool, progress: bool,
                     share: ProcessShare) -> SynthesisOutcome:
    """``settings.gen_groups`` independent generations (each group its own images, seed and optimiser) assembled
    in group order. Process ``share.rank`` of ``share.world`` generates groups rank, rank + world, ...; rank 0
    then waits for (or, when nobody holds them, generates) the others and stores the whole entry."""
    recipe = build_recipe(settings, loaded.name, loaded.source, loaded.resolution, prompts, loaded.model_type)
    key = recipe_key(recipe)
    stem = cache.stem(key, loaded.name, settings) if cache is not None else None
    stored = cache.load(stem, key) if cache is not None and not force else None
    if stored is not None:
        logger.info(f"Pseudo images: reusing {settings.num_images} cached {row_of(settings)} images "
                    f"({settings.gen_groups} groups) from {cache.images_path(stem)}.")
        return _hit(stored, settings, device, cache, stem, key)
    if share.world > 1 and cache is None:
        raise D4CError("none: processes share a split generation through the pseudo-image cache; give a folder.",
                       "gen_cache_dir")
    groups = settings.gen_groups
    parts = [replace(settings, num_images=n, seed=group_seed(settings.seed, g), gen_groups=1)
             for g, n in enumerate(group_sizes(settings.num_images, groups))]
    recipes = [group_recipe(recipe, part, g, groups) for g, part in enumerate(parts)]
    stems = [f"{stem}_group{g}of{groups}" if cache is not None else None for g in range(groups)]
    mine = [g for g in range(groups) if g % share.world == share.rank]
    order = mine + ([g for g in range(groups) if g not in mine] if share.rank == 0 else [])
    # Claim every group of this process first, so that rank 0 waits for them instead of taking them.
    claimed = {g: cache.lock(stems[g]) for g in mine} if cache is not None else {}
    for lock in claimed.values():
        lock.try_acquire()
    outcomes: dict[int, SynthesisOutcome] = {}
    try:
        for g in order:
            logger.info(f"Pseudo images: group {g + 1} of {groups} ({parts[g].num_images} images, process "
                        f"{share.rank} of {share.world}).")
            lock = claimed.get(g)
            outcomes[g] = _generate_entry(parts[g], loaded, device, prompts, cache, force, progress, recipes[g],
                                          stems[g], lock if lock is not None and lock.held else None)
    finally:
        for lock in claimed.values():
            lock.release()
    done = [outcomes[g] for g in sorted(outcomes)]
    images = torch.cat([o.images for o in done])
    targets = torch.cat([o.targets for o in done]) if all(o.targets is not None for o in done) else None
    sizes = [o.images.shape[0] for o in done]
    history = (sum(o.loss_history * n for o, n in zip(done, sizes)) / sum(sizes)
               if all(len(o.loss_history) for o in done) else torch.empty(0))
    outcome = SynthesisOutcome(images, settings, 0.0, generation_seconds=sum(o.generation_seconds for o in done),
                               key=key, loss_history=history, targets=targets, complete=len(done) == groups)
    if outcome.complete and cache is not None:
        seconds = sum(_recorded_seconds(cache, stems[g], outcomes[g]) for g in range(groups))
        info = {"seconds": round(seconds, 3), "groups": groups, "final_loss": outcome.final_loss,
                "device": device.type, "torch": torch.__version__, "model_name": loaded.name,
                "model_source": loaded.source}
        outcome.cache_path = cache.save(stem, key, images, targets, recipe, info,
                                        loss_history=history if len(history) else None)
        for g in range(groups):
            cache.remove(stems[g])
        logger.info(f"Pseudo images: {groups} groups assembled and cached in {outcome.cache_path}.")
    return outcome


def synthesize(settings: GenerationSettings, loaded: LoadedModel, device: torch.device | str,
               prompts: Sequence[str] | None = None, cache: PseudoImageCache | None = None, force: bool = False,
               img_path: str | Path | None = None, progress: bool = True,
               share: ProcessShare = ProcessShare()) -> SynthesisOutcome:
    """Pseudo images for ``settings`` on ``loaded``'s image tower, through the cache when one is given.

    A cache hit (same recipe) skips generation unless ``force``; a miss takes the entry's lock
    (waiting while another process generates the same recipe, then reusing its images), resumes
    from the recipe's checkpoint when one exists (unless ``force``), generates, stores images and
    recipe, and removes the checkpoint. Gaussian noise is drawn, never cached. Generation uses its
    own seeded generators, never the global RNG. With ``settings.gen_groups`` K > 1 the images are
    K independent generations (:func:`_generate_groups`), shared among the processes of ``share``.

    Args:
        settings: what to generate; ``method`` ``baseline`` becomes BNS or PSE by the image tower's family.
        loaded: the full-precision model (its name and source identify it in the cache recipe).
        device: where the images are made and returned.
        prompts: the generation prompts (every template x every class name of a prompt file; D4C uses them).
        cache: the recipe cache, or None for none (no checkpoints either).
        force: ignore a cached result and any checkpoint of this recipe.
        img_path: a folder that receives one PNG per image (and D4C's ``captions.json``).
        progress: show a progress bar while generating.
        share: this process's rank among the processes that generate one split recipe together (torchrun,
            srun); only rank 0 returns every image (``complete``) and writes PNGs.

    Raises:
        D4CError: for a method that does not fit the model's family, or a diverged generation.
    """
    began = time.perf_counter()
    device = torch.device(device)
    settings = replace(settings, method=resolve_method(settings.method, loaded.model))
    method = method_class(settings.method)
    method.check_model(loaded.model)
    if method.optimizes and settings.gen_groups > 1:
        outcome = _generate_groups(settings, loaded, device, prompts, cache, force, progress, share)
    elif method.optimizes:
        recipe = build_recipe(settings, loaded.name, loaded.source, loaded.resolution, prompts, loaded.model_type)
        stem = cache.stem(recipe_key(recipe), loaded.name, settings) if cache is not None else None
        outcome = _generate_entry(settings, loaded, device, prompts, cache, force, progress, recipe, stem)
    else:
        result = generate(loaded.model, settings, device, prompts, progress=False)
        outcome = SynthesisOutcome(result.images, settings, 0.0)
        logger.info(f"Pseudo images: Gaussian noise N(0, 1), {settings.num_images} images of {loaded.resolution} px "
                    f"(seed {settings.seed}).")
    outcome.prompts = prompts
    if img_path is not None and outcome.complete:
        family = loaded.family
        paths = save_png_images(outcome.images, img_path, outcome.captions(), family.mean, family.std)
        logger.info(f"Wrote {len(paths)} PNG files to {img_path}.")
    outcome.seconds = time.perf_counter() - began
    return outcome
