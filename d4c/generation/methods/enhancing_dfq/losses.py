"""EnhancingDFQ's losses (section 3.4) and the distributions they compare.

* ``soft_cross_entropy``: eq. 1 / 12's CE with a (mixed) target distribution, batch mean.
* ``kl_to_teacher``: ``KL(p || q)`` of a teacher distribution p and a student's logits (eqs. 4, 13).
* :class:`FeatureMemory`: SimLoss_1 (eq. 10), the cosine similarity between each image's
  last-activation features and the moving average of its label's features over the images of
  *previous* steps, averaged over the batch (the paper sums over images; the mean keeps its weight
  independent of the batch size, like the CE beside it). Images whose label has no average yet
  contribute nothing. After the loss, the batch's per-label feature means update the averages:
  ``f_k <- m f_k + (1 - m) mean_{d: y_d = k} a_d`` (the first mean of a label initialises it).
* ``simloss2``: eq. 11, the squared error between full-precision and quantized features of the
  chosen layers, each layer's mean over elements, summed over layers.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``mean_i -sum_k targets_ik log softmax(logits_i)_k``."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def kl_to_teacher(logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """``mean_i KL(p_i || softmax(logits_i))`` (0 * log 0 taken as 0)."""
    log_q = F.log_softmax(logits.float(), dim=1)
    return F.kl_div(log_q, teacher_probs, reduction="batchmean")


def simloss2(full: Sequence[torch.Tensor], quantized: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sum_l mean (a^l - a_hat^l)^2`` over the chosen layers."""
    return torch.stack([(q.float() - f.float()).square().mean() for f, q in zip(full, quantized)]).sum()


class FeatureMemory:
    """Per-label moving averages of last-activation features, and SimLoss_1 against them."""

    def __init__(self, num_classes: int, momentum: float):
        self.num_classes, self.momentum = num_classes, momentum
        self.means: torch.Tensor | None = None
        self.seen: torch.Tensor | None = None

    def _allocate(self, features: torch.Tensor) -> None:
        if self.means is None:
            self.means = features.new_zeros(self.num_classes, features.shape[1], dtype=torch.float32)
            self.seen = torch.zeros(self.num_classes, dtype=torch.bool, device=features.device)

    def loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``mean_d cos(a_d, f_{y_d})`` over the batch; images of labels never seen before count 0."""
        self._allocate(features)
        cosine = F.cosine_similarity(features.float(), self.means[labels], dim=1, eps=1e-8)
        return (cosine * self.seen[labels]).mean()

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Blend each label's batch mean of ``features`` into its average."""
        self._allocate(features)
        sums = torch.zeros_like(self.means).index_add_(0, labels, features.detach().float())
        counts = torch.bincount(labels, minlength=self.num_classes).to(sums.dtype)
        present = counts > 0
        batch_means = sums[present] / counts[present, None]
        blended = torch.where(self.seen[present, None],
                              self.momentum * self.means[present] + (1 - self.momentum) * batch_means, batch_means)
        self.means[present] = blended
        self.seen |= present

    def state_dict(self) -> dict[str, Any]:
        return {"means": self.means, "seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.means, self.seen = state["means"], state["seen"]
