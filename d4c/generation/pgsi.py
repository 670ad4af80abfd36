"""Prompt-Guided Semantic Injection (PGSI): text targets and the image-to-text logits.

Text targets ``t_k = n(f_T(prompt_k))`` are computed once, without gradient; each image gets a
target index ``y_i ~ Uniform{0..K-1}``, drawn once. The logits of image features ``f`` are
``n(f) . t_k / tau`` with ``tau = 0.1``.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch
import torch.nn.functional as F

from d4c.models.family import family_of

TAU = 0.1
TEXT_CHUNK = 256  # prompts per text-encoder forward (bounds memory for long prompt files)


@torch.no_grad()
def encode_text_targets(model: torch.nn.Module, prompts: Sequence[str], device: torch.device) -> torch.Tensor:
    """``K x D`` L2-normalised text features of ``prompts`` (float32, on ``device``; the model's own tokenizer)."""
    tokens = family_of(model).tokenize(list(prompts)).to(device)
    features = [model.encode_text(tokens[i:i + TEXT_CHUNK]).float() for i in range(0, len(tokens), TEXT_CHUNK)]
    return F.normalize(torch.cat(features), dim=-1)


def draw_targets(count: int, num_prompts: int, generator: torch.Generator) -> torch.Tensor:
    """``y_i ~ Uniform{0..K-1}`` for ``count`` images (int64, on the generator's device)."""
    return torch.randint(num_prompts, (count,), generator=generator, device=generator.device)


def text_logits(image_features: torch.Tensor, text_targets: torch.Tensor, tau: float = TAU) -> torch.Tensor:
    """``n(f_I(x_i)) . t_k / tau`` for every image i and prompt k (``N x K``)."""
    return F.normalize(image_features, dim=-1) @ text_targets.t() / tau


def prompts_digest(prompts: Sequence[str]) -> str:
    """SHA-256 of the prompt list (the recipe records prompt content, not the file's path)."""
    return hashlib.sha256("\n".join(prompts).encode("utf-8")).hexdigest()
