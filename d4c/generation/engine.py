"""The generation loop: initial images, Adam on the pixels, schedule, progress, checkpoints, NaN checks.

Randomness never touches the global RNG: a CPU generator seeded with ``seed`` draws the initial
``N(0, 1)`` images and the per-image state (the same on every device), and a generator on the
model's device, seeded from ``seed`` and saved in checkpoints, draws every per-step perturbation
and noise. A resumed run is therefore bit-identical to an uninterrupted one on the same device,
and a pipeline's other stages see the same global RNG whether the images came from the cache or not.

The hot loop does no host synchronisation: losses are accumulated on the device and read back
only every ``log_every`` iterations (progress bar), at checkpoints and at the end, which is also
when a NaN / Inf recorded on the device stops the run, naming the first bad iteration.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from d4c.acceleration import Compiled, compile_generation
from d4c.errors import D4CError
from d4c.generation.checkpoint import ArtifactStore, CheckpointStore
from d4c.generation.fastpaths import fast_image_encoder
from d4c.generation.methods import method_class, resolve_method
from d4c.generation.rows import row_of
from d4c.generation.schedules import schedule_steps
from d4c.generation.settings import GenerationSettings
from d4c.models.family import family_of
from d4c.runtime import adam

STEP_SEED_OFFSET = 0x5EED  # the per-step generator's seed is seed + this (distinct from the setup stream)


@dataclass
class GenerationResult:
    """What :func:`generate` returns."""

    images: torch.Tensor
    """``B x 3 x R x R`` float32 pseudo images in CLIP's normalised pixel space, detached, on the device."""
    seconds: float
    """Wall-clock seconds of this call's optimisation (0 for Gaussian noise)."""
    iterations_run: int
    """Outer iterations optimised by this call (fewer than gen_iter when resumed)."""
    resumed_from: int
    """Outer iterations already done by the checkpoint this call resumed from (0 for a fresh start)."""
    loss_history: torch.Tensor
    """Per outer iteration, the mean mini-batch loss (CPU, length gen_iter; empty for Gaussian noise)."""
    targets: torch.Tensor | None = None
    """D4C's prompt index y_i of each image (EnhancingDFQ: its target's main prompt; CPU), None for other methods."""
    generator: torch.nn.Module | None = None
    """The trained generator of a method that trains one (EnhancingDFQ), None for the others."""

    @property
    def final_loss(self) -> float | None:
        """The last iteration's mean mini-batch loss."""
        return float(self.loss_history[-1]) if len(self.loss_history) else None


def initial_images(num_images: int, resolution: int, seed: int) -> tuple[torch.Tensor, torch.Generator]:
    """``N(0, 1)`` images from a CPU generator seeded with ``seed`` (identical on every device), and that generator.

    The one place noise images are made: every method starts from them, and the Gaussian-noise
    row keeps them as they are.
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(num_images, 3, resolution, resolution, generator=generator), generator


def step_generator(seed: int, device: torch.device) -> torch.Generator:
    """The generator of per-step random draws, on ``device``."""
    return torch.Generator(device=device).manual_seed(seed + STEP_SEED_OFFSET)


@contextlib.contextmanager
def frozen(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (BN uses its running statistics) and no parameter gradients (only pixel gradients are
    needed) while generating; both restored afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def _log_every(iterations: int) -> int:
    return max(1, min(10, iterations // 20))


def _raise_if_diverged(first_bad: torch.Tensor, settings: GenerationSettings) -> None:
    bad = int(first_bad)
    if bad >= 0:
        raise D4CError(f"{settings.gen_lr}: pseudo-image generation ({row_of(settings)}) diverged (NaN or Inf in the "
                       f"loss or the images at iteration {bad + 1} of {settings.gen_iter}); lower it or check the "
                       f"model.", "gen_lr")


class IterationLoop:
    """The bookkeeping after each iteration of a generation loop: the progress bar with the loss, the
    divergence check ``check(done)`` (every few iterations and before each checkpoint), checkpoints every
    ``gen_ckpt_every`` iterations and the ``on_iteration`` callback."""

    def __init__(self, settings: GenerationSettings, start: int, device: torch.device, desc: str, unit: str,
                 progress: bool, checkpoint: CheckpointStore | None, on_iteration: Callable[[int], None] | None,
                 check: Callable[[int], None]):
        self.settings, self.device, self.checkpoint = settings, device, checkpoint
        self.on_iteration, self.check = on_iteration, check
        self.log_every = _log_every(settings.gen_iter)
        self.bar = tqdm(total=settings.gen_iter, initial=start, desc=desc, unit=unit, disable=not progress,
                        dynamic_ncols=True)

    def finished(self, iteration: int, history: torch.Tensor, snapshot: Callable[[], dict]) -> None:
        """After iteration ``iteration`` (its loss in ``history``); ``snapshot()`` gives the method's state
        for a checkpoint (the iteration, loss history, device type and settings are added here)."""
        settings, done = self.settings, iteration + 1
        self.bar.update(1)
        if done % self.log_every == 0 or done == settings.gen_iter:
            self.check(done)
            self.bar.set_postfix(loss=f"{float(history[iteration]):.4f}", refresh=False)
        if self.checkpoint is not None and settings.gen_ckpt_every and done % settings.gen_ckpt_every == 0 \
                and done < settings.gen_iter:
            self.check(done)
            self.checkpoint.save({"iteration": done, **snapshot(), "history": history[:done].cpu(),
                                  "device_type": self.device.type, "settings": settings.as_dict()})
        if self.on_iteration is not None:
            self.on_iteration(done)

    def close(self) -> None:
        self.bar.close()


class _PixelStep:
    """The loss of a mini-batch and its pixel gradient, written into a gradient buffer kept for the run.

    Autograd through ``pixels[index]`` would materialise a zero gradient of the whole image tensor
    at every step (and fill it, 128 x 3 x R x R values); here the gradient of the mini-batch's view
    is taken directly and copied into a persistent buffer that is zero outside the current step's
    mini-batches. Adam sees the same gradient tensor values as before.
    """

    def __init__(self, method, pixels: torch.Tensor, generator: torch.Generator, encoder: Compiled):
        self.method, self.pixels, self.generator, self.encoder = method, pixels, generator, encoder
        pixels.grad = torch.zeros_like(pixels)
        if encoder.active:
            method.encode = encoder.run

    def loss_and_gradient(self, index: slice, groups: int) -> torch.Tensor:
        state = self.generator.get_state() if self.encoder.active else None
        view = self.pixels[index]
        loss = self.method.loss(view, index, groups, self.generator)
        try:
            grad, = torch.autograd.grad(loss, view)
        except Exception as error:  # noqa: BLE001 - a compiled backward that fails: redo the step eagerly
            if state is None:
                raise
            self.encoder.fall_back(error)
            self.method.encode = self.method.encode_images
            self.generator.set_state(state)
            view = self.pixels[index]
            loss = self.method.loss(view, index, groups, self.generator)
            grad, = torch.autograd.grad(loss, view)
        self.pixels.grad[index].copy_(grad)
        return loss.detach()

    def clear(self, chunks: list[tuple[slice, int]]) -> None:
        for index, _ in chunks:
            self.pixels.grad[index].zero_()


def generate(model: torch.nn.Module, settings: GenerationSettings, device: torch.device | str,
             prompts: Sequence[str] | None = None, checkpoint: CheckpointStore | None = None,
             progress: bool = True, on_iteration: Callable[[int], None] | None = None,
             trained: ArtifactStore | None = None) -> GenerationResult:
    """Generate ``settings.num_images`` pseudo images with ``settings.method`` for the image tower of ``model``.

    Args:
        model: a full-precision CLIP (its image tower is used; parameters are frozen while generating).
        settings: method (``baseline`` is resolved by the image tower's family), sizes, optimiser, schedule, seed.
        device: where the images are optimised (the model's device).
        prompts: the generation prompts (used by D4C).
        checkpoint: resumed from when it holds a matching state; written every ``settings.gen_ckpt_every``.
        progress: show a progress bar with the current loss.
        on_iteration: called with k after the k-th outer iteration completes (k counts from 1).
        trained: where a method that trains a generator keeps it (its iterations are generator steps; the
            method runs the whole call, :meth:`~d4c.generation.methods.base.GenerationMethod.train_and_draw`).
    """
    device = torch.device(device)
    settings = replace(settings, method=resolve_method(settings.method, model))
    cls = method_class(settings.method)
    cls.check_model(model)
    if cls.trains_generator:
        return cls.train_and_draw(model, settings, device, prompts, checkpoint=checkpoint, trained=trained,
                                  progress=progress, on_iteration=on_iteration)
    resolution = family_of(model).resolution
    images, setup_generator = initial_images(settings.num_images, resolution, settings.seed)
    images = images.to(device)
    if not cls.optimizes:
        return GenerationResult(images, 0.0, 0, 0, torch.empty(0))

    method = cls(model, settings, prompts, device)
    method.setup(settings.num_images, resolution, setup_generator)
    pixels = images.requires_grad_(True)
    optimizer = adam([pixels], settings.gen_lr)
    generator = step_generator(settings.seed, device)
    history = torch.full((settings.gen_iter,), float("nan"), device=device)
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    start = 0
    state = checkpoint.load(device) if checkpoint is not None else None
    if state is not None:
        with torch.no_grad():
            pixels.copy_(state["images"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"].cpu())
        method.load_state_dict(state["method"])
        history[: state["iteration"]] = state["history"].to(device)
        start = int(state["iteration"])

    steps = schedule_steps(settings.num_images, settings.gen_batch_size, settings.gen_schedule)
    num_minibatches = sum(groups for chunks in steps for _, groups in chunks)
    step = _PixelStep(method, pixels, generator, Compiled(method.encode_images, f"image encoder ({row_of(settings)})",
                                                         enabled=compile_generation(settings.compile, device)))
    loop = IterationLoop(settings, start, device, f"generating ({row_of(settings)})", "it", progress, checkpoint,
                         on_iteration, lambda done: _raise_if_diverged(first_bad, settings))
    began = time.perf_counter()
    try:
        with frozen(model), fast_image_encoder(model, fold_batchnorm=not method.reads_batchnorm_inputs):
            method.attach()
            for iteration in range(start, settings.gen_iter):
                total = torch.zeros((), device=device)
                for chunks in steps:
                    for index, groups in chunks:
                        total = total + step.loss_and_gradient(index, groups)
                    optimizer.step()
                    step.clear(chunks)
                finite = torch.isfinite(total) & torch.isfinite(pixels.detach()).all()
                first_bad = torch.where((first_bad < 0) & ~finite, iteration, first_bad)
                history[iteration] = total / num_minibatches
                loop.finished(iteration, history, lambda: {
                    "images": pixels.detach().cpu(), "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(), "method": method.state_dict()})
    finally:
        method.detach()
        loop.close()
    _raise_if_diverged(first_bad, settings)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - began
    targets = getattr(method, "targets", None)
    return GenerationResult(pixels.detach(), seconds, settings.gen_iter - start, start, history.cpu(),
                            None if targets is None else targets.cpu())
