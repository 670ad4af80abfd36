"""Train (or load) EnhancingDFQ's generator and draw a run's images; save and load the trained generator.

The trained generator is kept beside the cached images (``<model>_enhancing_dfq_<key>.generator.pt``)
under a key that leaves the number of images out: a later run with the same recipe but more (or
fewer) calibration images draws them from it without training again. Images are drawn from their
own seeded stream in full batches, so the first n images of a larger draw are the n images of a
smaller one.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence

import torch

from d4c.errors import D4CError
from d4c.generation.checkpoint import ArtifactStore, CheckpointStore
from d4c.generation.engine import GenerationResult, frozen
from d4c.generation.methods.enhancing_dfq.options import parse_options
from d4c.generation.methods.enhancing_dfq.sampler import ConditionalSampler
from d4c.generation.methods.enhancing_dfq.training import GeneratorTrainer, build_sampler, draw_generator
from d4c.generation.settings import GenerationSettings

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


def save_trained(store: ArtifactStore, sampler: ConditionalSampler, history: torch.Tensor,
                 info: dict[str, Any] | None = None) -> None:
    """Write the trained sampler (weights, options, classes, resolution, loss history) atomically."""
    store.save({"format": FORMAT_VERSION, "sampler": {k: v.detach().cpu() for k, v in sampler.state_dict().items()},
                "options": sampler.options.as_dict(), "num_classes": sampler.num_classes,
                "resolution": sampler.resolution, "history": history.cpu(), "info": info or {}})


def load_trained(store: ArtifactStore, device: torch.device) -> tuple[ConditionalSampler, torch.Tensor] | None:
    """The saved sampler on ``device`` and its loss history, or None when the store holds none for its key."""
    state = store.load(torch.device("cpu"))
    if state is None or state.get("format") != FORMAT_VERSION:
        return None
    options = parse_options(base=state["options"])
    sampler, _ = build_sampler(int(state["num_classes"]), int(state["resolution"]), options, 0, torch.device("cpu"))
    sampler.load_state_dict(state["sampler"])
    return sampler.to(device), state["history"]


def draw_images(sampler: ConditionalSampler, count: int, batch_size: int, seed: int,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` images (``N x 3 x R x R``, on ``device``) and their hard labels, from the seeded draw stream."""
    sampler.train()  # batch statistics and the Transformer path used in training
    return sampler.draw(count, batch_size, draw_generator(seed, device))


def train_and_draw(model: torch.nn.Module, settings: GenerationSettings, device: torch.device,
                   prompts: Sequence[str] | None, checkpoint: CheckpointStore | None = None,
                   trained: ArtifactStore | None = None, progress: bool = True,
                   on_iteration: Callable[[int], None] | None = None) -> GenerationResult:
    """The images of ``settings`` for ``model``: from the trained generator in ``trained`` when it has one,
    else after training (resuming from ``checkpoint``), saving the generator to ``trained``."""
    if not prompts:
        raise D4CError("EnhancingDFQ needs generation prompts (its classes): give --custom_file a file with "
                       "'classnames' and 'templates'.")
    from d4c.generation.methods.enhancing_dfq import options_of

    device = torch.device(device)
    options = options_of(settings)
    began = time.perf_counter()
    loaded = load_trained(trained, device) if trained is not None else None
    if loaded is not None:
        sampler, history = loaded  # its key covers the model, prompts, resolution and every setting but B
        iterations_run, resumed_from = 0, settings.gen_iter
        logger.info(f"EnhancingDFQ: drawing {settings.num_images} images from the trained generator {trained.path} "
                    f"(no training).")
    else:
        with frozen(model):
            trainer = GeneratorTrainer(model, settings, options, prompts, device)
            history, resumed_from, _ = trainer.train(checkpoint, progress, on_iteration)
        sampler = trainer.state.sampler
        iterations_run = settings.gen_iter - resumed_from
        if trained is not None:
            save_trained(trained, sampler, history, {"layers": trainer.taps.indices})
    images, labels = draw_images(sampler, settings.num_images, settings.gen_batch_size, settings.seed, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return GenerationResult(images.detach(), time.perf_counter() - began, iterations_run, resumed_from, history.cpu(),
                            labels.cpu(), generator=sampler)


def finetune_for_outcome(model: torch.nn.Module, outcome: Any, prompts: Sequence[str],
                         device: torch.device) -> dict[str, Any]:
    """The paper's quantization loop (:mod:`.finetune`) on a calibrated quantized ``model``, with batches of the
    generator ``outcome`` (a :class:`~d4c.generation.synthesis.SynthesisOutcome`) trained or found in the cache;
    returns its report for the result file."""
    from d4c.generation.methods.enhancing_dfq.finetune import finetune_activation_ranges

    settings = outcome.settings
    sampler = outcome.generator
    if sampler is None and outcome.trained_store is not None:
        saved = load_trained(outcome.trained_store, torch.device(device))
        sampler = None if saved is None else saved[0]
    if sampler is None:
        where = outcome.trained_store.path if outcome.trained_store is not None else "the cache"
        raise D4CError(f"EnhancingDFQ's finetune needs the trained generator ({where}), which is missing beside "
                       f"the cached images; pass --gen_force to train it again.")
    from d4c.generation.methods.enhancing_dfq import options_of

    return finetune_activation_ranges(model, sampler, prompts, options_of(settings), settings.gen_batch_size,
                                      settings.seed, device)
