"""Label embeddings from multi-layer features (section 3.3.1, eqs. 3-5).

One MLP classifier per chosen layer j maps that layer's features ``F^j`` of a generated image to
the K classes (the generation prompts): ``LayerNorm (no affine) -> Linear(C_j, d) -> ReLU ->
Linear(d, K, no bias)``. The input normalisation lets one learning rate serve layers of very
different scales; the last Linear's weight ``W^j`` is ``K x d``, so its row k is class k's centre in
a d-dimensional space, d = the generator's latent width. Each classifier minimises (eq. 4)
``CE(prob^j, y) + KL(prob || prob^j)``, y the image's (possibly mixed) target and prob the full
model's zero-shot prediction; features are detached, so the generator is not trained by it.

The label embeddings are then (eq. 5) ``E = mean_j W^j``, centred (the mean row subtracted) and
each row scaled to norm ``sqrt(d)``, the expected norm of the N(0, 1) embeddings they replace (the
paper gives no scale). A classifier's softmax is unchanged by a vector added to every row, so
centring only drops what no class is distinguished by; without it, and with unequal row norms, the
mixer's dot-product attention sends every query to the rows that share that common part or have
the largest norm (on the zoo most images then target one class). The rows' directions, the
classes' relations the mixer is meant to use, are kept.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from d4c.generation.methods.enhancing_dfq.losses import kl_to_teacher, soft_cross_entropy


class LayerClassifiers(nn.Module):
    """``MLP^j`` for every chosen layer."""

    def __init__(self, feature_dims: Sequence[int], latent_dim: int, num_classes: int):
        super().__init__()
        self.heads = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(dim, elementwise_affine=False), nn.Linear(dim, latent_dim), nn.ReLU(),
                          nn.Linear(latent_dim, num_classes, bias=False))
            for dim in feature_dims)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Logits ``N x K`` of every classifier (eq. 3, before the softmax)."""
        return [head(f) for head, f in zip(self.heads, features)]

    def loss(self, features: Sequence[torch.Tensor], targets: torch.Tensor,
             teacher_probs: torch.Tensor) -> torch.Tensor:
        """Eq. 4 summed over the classifiers: ``sum_j CE(prob^j, y) + KL(prob || prob^j)`` (batch means)."""
        total = torch.zeros((), device=targets.device)
        for logits in self([f.detach().float() for f in features]):
            total = total + soft_cross_entropy(logits, targets) + kl_to_teacher(logits, teacher_probs)
        return total

    def weight_rows(self) -> torch.Tensor:
        """``J x K x d``: every classifier's last weight matrix ``W^j``."""
        return torch.stack([head[-1].weight for head in self.heads])


@torch.no_grad()
def embeddings_from_classifiers(classifiers: LayerClassifiers) -> torch.Tensor:
    """Eq. 5, ``E = mean_j W^j`` (``K x d``), centred and with every row of norm ``sqrt(d)``."""
    return standardize_rows(classifiers.weight_rows().mean(dim=0))


def standardize_rows(embeddings: torch.Tensor) -> torch.Tensor:
    """``embeddings`` minus their mean row, each row then scaled to norm ``sqrt(d)``."""
    centred = embeddings - embeddings.mean(dim=0, keepdim=True)
    return centred * (embeddings.shape[1] ** 0.5 / centred.norm(dim=1, keepdim=True).clamp(min=1e-12))


def classifier_accuracy(classifiers: LayerClassifiers, features: Sequence[torch.Tensor],
                        labels: torch.Tensor) -> list[float]:
    """Top-1 agreement of each classifier with ``labels`` (a diagnostic)."""
    with torch.no_grad():
        return [float((logits.argmax(dim=1) == labels).float().mean()) for logits in classifiers(features)]

