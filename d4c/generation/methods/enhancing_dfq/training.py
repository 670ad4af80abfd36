"""EnhancingDFQ's training loop: the generator against CLIP's zero-shot head, then the final images.

Each of ``gen_iter`` steps draws ``gen_batch_size`` labels, mixing weights and noise, generates
the images, encodes them with the frozen full-precision image encoder (taps read ``F^j`` and the
last activation) and takes one Adam step of the generator (with its label embeddings, mixer and
flow attention) on ``CE(softmax(n(f_I(x)) . t_k / tau), y) + w * SimLoss_1`` (eq. 12, tau = 0.1
as in PGSI). During the warm-up (the first ``warmup * gen_iter`` steps) the per-layer classifiers
take one step of eq. 4 on the same (detached) features; at its end their averaged weight rows
replace the random label embeddings (eq. 5) and the embeddings' Adam state restarts.

After training, ``num_images`` images are drawn in full batches from a generator seeded apart
from the training stream. Randomness never touches the global RNG: the networks are initialised
under a forked RNG seeded with ``seed``, per-step draws come from the engine's step generator.
The full state (networks, both optimisers, the feature memory, the random stream, the loss
history) is checkpointed every ``gen_ckpt_every`` steps, so a resumed run ends with the same
images as an uninterrupted one (on the same device).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from d4c.errors import D4CError
from d4c.generation.checkpoint import CheckpointStore
from d4c.generation.engine import IterationLoop, frozen, step_generator
from d4c.generation.fastpaths import encode_images, fast_image_encoder
from d4c.generation.methods.enhancing_dfq.embeddings import (LayerClassifiers, classifier_accuracy,
                                                             embeddings_from_classifiers)
from d4c.generation.methods.enhancing_dfq.features import EncoderTaps
from d4c.generation.methods.enhancing_dfq.losses import FeatureMemory, soft_cross_entropy
from d4c.generation.methods.enhancing_dfq.options import EnhancingDFQOptions
from d4c.generation.methods.enhancing_dfq.sampler import ConditionalSampler
from d4c.generation.pgsi import TAU, encode_text_targets, text_logits
from d4c.generation.rows import row_of
from d4c.generation.settings import GenerationSettings
from d4c.models.family import family_of
from d4c.runtime import adam

logger = logging.getLogger(__name__)

DRAW_SEED_OFFSET = 0xD4A3
"""The final images' generator is seeded with seed + this (apart from the training stream)."""


def draw_generator(seed: int, device: torch.device) -> torch.Generator:
    """The random stream the final images are drawn from."""
    return torch.Generator(device=device).manual_seed(seed + DRAW_SEED_OFFSET)


def build_sampler(num_classes: int, resolution: int, options: EnhancingDFQOptions, seed: int,
                  device: torch.device, feature_dims: Sequence[int] | None = None
                  ) -> tuple[ConditionalSampler, LayerClassifiers | None]:
    """The sampler (and, with ``feature_dims`` and label embeddings on, the classifiers), seeded, on ``device``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sampler = ConditionalSampler(num_classes, resolution, options)
        classifiers = None
        if feature_dims is not None and options.label_embeddings:
            classifiers = LayerClassifiers(feature_dims, options.latent_dim, num_classes)
    return sampler.to(device), (classifiers.to(device) if classifiers is not None else None)


@dataclass
class Training:
    """Everything that changes while the generator trains."""

    sampler: ConditionalSampler
    classifiers: LayerClassifiers | None
    generator_optimizer: torch.optim.Optimizer
    classifier_optimizer: torch.optim.Optimizer | None
    memory: FeatureMemory
    embeddings_replaced: bool = False

    def state_dict(self) -> dict:
        return {"sampler": self.sampler.state_dict(), "generator_optimizer": self.generator_optimizer.state_dict(),
                "classifiers": None if self.classifiers is None else self.classifiers.state_dict(),
                "classifier_optimizer": (None if self.classifier_optimizer is None
                                         else self.classifier_optimizer.state_dict()),
                "memory": self.memory.state_dict(), "embeddings_replaced": self.embeddings_replaced}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.generator_optimizer.load_state_dict(state["generator_optimizer"])
        if self.classifiers is not None:
            self.classifiers.load_state_dict(state["classifiers"])
            self.classifier_optimizer.load_state_dict(state["classifier_optimizer"])
        self.memory.load_state_dict(state["memory"])
        self.embeddings_replaced = bool(state["embeddings_replaced"])


def warmup_steps(options: EnhancingDFQOptions, iterations: int) -> int:
    """Steps of the warm-up (at least one when the label embeddings come from the classifiers)."""
    return max(1, round(options.warmup * iterations)) if options.label_embeddings else 0


class GeneratorTrainer:
    """One training run of EnhancingDFQ for a frozen CLIP model and a list of prompts."""

    def __init__(self, model: torch.nn.Module, settings: GenerationSettings, options: EnhancingDFQOptions,
                 prompts: Sequence[str], device: torch.device):
        self.model, self.settings, self.options, self.device = model, settings, options, device
        self.resolution = family_of(model).resolution
        self.text_targets = encode_text_targets(model, prompts, device)
        self.taps = EncoderTaps(model, options.layers)
        dims = self.taps.feature_dims(model.visual, self.resolution, device) if options.label_embeddings else None
        sampler, classifiers = build_sampler(len(prompts), self.resolution, options, settings.seed, device, dims)
        self.state = Training(
            sampler, classifiers,
            adam(list(sampler.parameters()), options.lr_generator, (options.beta1, options.beta2)),
            adam(list(classifiers.parameters()), options.lr_classifier) if classifiers is not None else None,
            FeatureMemory(len(prompts), options.simloss_momentum))
        self.warmup = warmup_steps(options, settings.gen_iter)

    def step(self, index: int, generator: torch.Generator) -> torch.Tensor:
        """One generator step (and, during the warm-up, one classifier step); returns the generator loss."""
        state, options = self.state, self.options
        labels, weights, z = state.sampler.draw_inputs(self.settings.gen_batch_size, generator)
        images, targets = state.sampler(labels, weights, z)
        logits = text_logits(encode_images(self.model, images).float(), self.text_targets, TAU)
        loss = soft_cross_entropy(logits, targets)
        hard = targets.detach().argmax(dim=1)
        if options.losses:
            loss = loss + options.simloss_weight * state.memory.loss(self.taps.last, hard)
        state.generator_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.generator_optimizer.step()
        if options.losses:
            state.memory.update(self.taps.last, hard)
        if state.classifiers is not None and index < self.warmup:
            classifier_loss = state.classifiers.loss(self.taps.features, targets.detach(),
                                                     logits.detach().softmax(dim=1))
            state.classifier_optimizer.zero_grad(set_to_none=True)
            classifier_loss.backward()
            state.classifier_optimizer.step()
            if index + 1 == self.warmup:
                self.replace_embeddings(hard)
        return loss.detach()

    @torch.no_grad()
    def replace_embeddings(self, labels: torch.Tensor) -> None:
        """Eq. 5: the classifiers' averaged rows become the label embeddings; their Adam state restarts."""
        state = self.state
        agreement = classifier_accuracy(state.classifiers, [f.float() for f in self.taps.features], labels)
        state.sampler.embeddings.copy_(embeddings_from_classifiers(state.classifiers))
        state.generator_optimizer.state.pop(state.sampler.embeddings, None)
        state.embeddings_replaced = True
        logger.info(f"EnhancingDFQ: label embeddings from {len(agreement)} layer classifiers (layers "
                    f"{self.taps.indices}; agreement with the last warm-up batch's labels: "
                    f"{', '.join(f'{a:.2f}' for a in agreement)}).")

    def train(self, checkpoint: CheckpointStore | None, progress: bool,
              on_iteration: Callable[[int], None] | None) -> tuple[torch.Tensor, int, float]:
        """Train (resuming from ``checkpoint``); returns the loss history, the step resumed from and seconds."""
        settings, device = self.settings, self.device
        generator = step_generator(settings.seed, device)
        history = torch.full((settings.gen_iter,), float("nan"), device=device)
        start = 0
        saved = checkpoint.load(device) if checkpoint is not None else None
        if saved is not None:
            self.state.load_state_dict(saved["training"])
            generator.set_state(saved["generator"].cpu())
            history[: saved["iteration"]] = saved["history"].to(device)
            start = int(saved["iteration"])
        loop = IterationLoop(settings, start, device, f"training the generator ({row_of(settings)}{self._ablation()})",
                             "step", progress, checkpoint, on_iteration, lambda done: self._check_finite(history, done))
        began = time.perf_counter()
        self.state.sampler.train()
        try:
            with frozen(self.model), fast_image_encoder(self.model), self.taps:
                for index in range(start, settings.gen_iter):
                    history[index] = self.step(index, generator)
                    loop.finished(index, history, lambda: {"training": self.state.state_dict(),
                                                           "generator": generator.get_state()})
        finally:
            loop.close()
        self._check_finite(history, settings.gen_iter)
        return history.cpu(), start, time.perf_counter() - began

    def _ablation(self) -> str:
        ablation = self.options.ablation()
        return f", {ablation}" if ablation else ""

    def _check_finite(self, history: torch.Tensor, done: int) -> None:
        """Stop with one sentence when a loss of the first ``done`` steps is NaN or Inf."""
        bad = (~torch.isfinite(history[:done])).nonzero()
        if len(bad):
            raise D4CError(f"sets lr_generator {self.options.lr_generator}, at which EnhancingDFQ's generator training "
                           f"diverged (NaN or Inf in its loss at step {int(bad[0]) + 1} of {self.settings.gen_iter}); "
                           f"lower it.", "edfq")
