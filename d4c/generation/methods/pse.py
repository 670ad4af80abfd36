"""PSE (ViT image towers, after PSAQ-ViT): maximise the patch-similarity entropy (docs/method.md, "PSE").

For every attention layer of the image encoder, with the attention's input tokens X and the
per-head attention probabilities A_h, ``u = mean_h(A_h X)`` (class token dropped, P patch tokens);
``Gamma`` is the cosine similarity of the P tokens of each image, a normalised matrix product;
a Gaussian KDE (bandwidth 0.01) of its P^2 values is evaluated at 10 points evenly spaced between
the mini-batch's min and max similarity, and ``H = integral -(p + 1e-4) log(p + 1e-4)`` by the
trapezoid rule, averaged over images. Loss = ``-sum_layers H + 0.1 TV``.

CLIP calls ``nn.MultiheadAttention`` with ``need_weights=False``; a forward pre-hook on each
attention module recomputes ``mean_h A_h`` from the module's own in-projection, leaving the
model's outputs untouched. The tokens are sequence-first ``[L, N, D]`` in OpenAI's ViTs and
batch-first ``[N, L, D]`` in open_clip's (the module's ``batch_first`` says which). ``mean_h(A_h X) = (mean_h A_h) X``, so one ``L x L`` product per image.
The KDE's evaluation points (and so the trapezoid spacing) are constants of each step: no
gradient flows through the min / max.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from d4c.errors import D4CError
from d4c.generation.methods.base import HookedTermsMethod, register
from d4c.generation.settings import GenerationSettings
from d4c.models.family import VIT, family_of

KDE_BANDWIDTH = 0.01
KDE_POINTS = 10
ENTROPY_EPS = 1e-4
KERNEL_EXPONENT_FLOOR = -80.0


def batch_first_tokens(attention: nn.MultiheadAttention, tokens: torch.Tensor) -> torch.Tensor:
    """The attention's input ``tokens`` as ``N x L x D`` (a view; OpenAI's are ``L x N x D``, open_clip's batch-first)."""
    return tokens if getattr(attention, "batch_first", False) else tokens.transpose(0, 1)


def mean_attention_probabilities(attention: nn.MultiheadAttention, tokens: torch.Tensor) -> torch.Tensor:
    """``mean_h A_h`` of a self-attention over ``tokens`` (in the attention's own layout): ``N x L x L``."""
    tokens = batch_first_tokens(attention, tokens)
    batch, length, width = tokens.shape
    heads = attention.num_heads
    head_dim = width // heads
    qk = F.linear(tokens, attention.in_proj_weight[:2 * width], attention.in_proj_bias[:2 * width])
    q, k = qk.view(batch, length, 2, heads, head_dim).permute(2, 0, 3, 1, 4)  # each N x H x L x d
    scores = (q * head_dim ** -0.5) @ k.transpose(-1, -2)
    return scores.softmax(dim=-1).mean(dim=1)


def patch_similarity(attention: nn.MultiheadAttention, tokens: torch.Tensor) -> torch.Tensor:
    """Cosine-similarity matrices ``N x P x P`` of ``u = mean_h(A_h X)`` without the class token."""
    mixed = mean_attention_probabilities(attention, tokens) @ batch_first_tokens(attention, tokens)  # N x L x D
    patches = F.normalize(mixed[:, 1:], dim=-1)
    return patches @ patches.transpose(1, 2)


def kde_entropy(values: torch.Tensor, points: int = KDE_POINTS, bandwidth: float = KDE_BANDWIDTH,
                eps: float = ENTROPY_EPS) -> torch.Tensor:
    """Differential entropy of a Gaussian KDE of each row of values.

    ``values`` is ``G x M x V`` (G mini-batches of M images with V values each); the KDE of each
    image is evaluated at ``points`` evenly spaced between its mini-batch's min and max value and
    ``integral -(p + eps) log(p + eps)`` is taken by the trapezoid rule. Returns ``G x M``.
    """
    flat = values.detach().flatten(1)
    low, high = flat.amin(dim=1), flat.amax(dim=1)  # per mini-batch
    steps = torch.linspace(0, 1, points, device=values.device, dtype=values.dtype)
    grid = low[:, None] + (high - low)[:, None] * steps  # G x points
    exponent = (values[..., None] - grid[:, None, None, :]).square() * (-0.5 / bandwidth ** 2)  # G x M x V x points
    # Kernel values below exp(-80) are far below eps; clamping keeps exp out of float32's
    # denormal range, where it is tens of times slower on CPUs.
    kernel = torch.exp(exponent.clamp(min=KERNEL_EXPONENT_FLOOR))
    density = kernel.mean(dim=2) / (bandwidth * math.sqrt(2 * math.pi))  # G x M x points
    integrand = -(density + eps) * torch.log(density + eps)
    spacing = ((high - low) / (points - 1))[:, None]
    return spacing * (integrand.sum(dim=-1) - 0.5 * (integrand[..., 0] + integrand[..., -1]))


@register
class PSE(HookedTermsMethod):
    """Patch-similarity entropy maximisation, for VisionTransformer image towers."""

    name = "pse"
    term_sign = -1.0  # maximise the entropy

    def __init__(self, model: nn.Module, settings: GenerationSettings, prompts: Sequence[str] | None,
                 device: torch.device) -> None:
        super().__init__(model, settings, prompts, device)
        self.hooked = family_of(model).image_attentions

    @classmethod
    def check_model(cls, model: nn.Module) -> None:
        if not cls.is_baseline_for(model):
            raise D4CError("pse (PSE) needs a ViT image encoder (patch tokens and attention), but this model's is a "
                           f"{type(model.visual).__name__}: use bns or baseline.", "method")

    @classmethod
    def is_baseline_for(cls, model: nn.Module) -> bool:
        return family_of(model).image_kind == VIT

    def term(self, module: nn.MultiheadAttention, inputs: torch.Tensor, groups: int) -> torch.Tensor:
        similarity = patch_similarity(module, inputs)
        entropy = kde_entropy(similarity.reshape(groups, similarity.shape[0] // groups, -1))
        return entropy.mean(dim=1).sum()
