"""The multi-layer features mixer (section 3.3.2, eq. 6): attention-based Mixup over label embeddings.

For an image with mixing weights ``lambda`` over the K classes (rows sum to 1):

    Q = W_Q sum_i lambda_i E_i,   K = W_K [E_1 .. E_K],   V = W_V [E_1 .. E_K]
    sigma = softmax(Q K^T / sqrt(d_h)) per head,   O^0 = concat_h sigma_h V_h,   y = sum_k sigma_k y_k

with ``h`` heads of width ``d_h = d / h`` (one head is eq. 6 exactly) and the target y = the
heads' mean attention over the classes (a distribution over the K prompts; each head's sigma
sums to 1, so their mean does). The target is a label: no gradient reaches the mixer through it,
only through ``O^0``. (With that gradient, ``CE(P, sigma)`` rewards the mixer for pointing every
query at whichever classes the generator already renders well; on the offline zoo 300 steps
then leave 3 distinct predictions among 32 images, against 13 without the mixer.) W_Q, W_K and
W_V start as the identity: the mixer begins as
plain similarity attention between the mixed query and every class embedding, so sigma starts
concentrated on the query's classes instead of near-uniform (random projections of random
embeddings give every class about the same score, and an uninformative target).

Queries (:func:`draw_mixing_weights`): each image's own class, and with probability ``mix_prob``
a second, different class, ``lambda = (u, 1 - u)``, u ~ U(0, 1) (Qimera's two-class mix; the
paper does not say how many classes or which lambda).
"""

from __future__ import annotations

import torch
from torch import nn


def draw_mixing_weights(labels: torch.Tensor, num_classes: int, mix_prob: float,
                        generator: torch.Generator) -> torch.Tensor:
    """``N x K`` mixing weights: one-hot ``labels``, mixed with a second class for a ``mix_prob`` share."""
    n, device = labels.shape[0], labels.device
    mixed = torch.rand(n, generator=generator, device=device) < mix_prob
    other = (labels + torch.randint(1, max(num_classes, 2), (n,), generator=generator, device=device)) % num_classes
    share = torch.rand(n, generator=generator, device=device)
    if num_classes < 2:
        mixed = torch.zeros_like(mixed)
    weights = torch.zeros(n, num_classes, device=device)
    own = torch.where(mixed, share, torch.ones_like(share))
    rows = torch.arange(n, device=device)
    weights[rows, labels] = own
    weights[rows, other] += torch.where(mixed, 1 - share, torch.zeros_like(share))
    return weights


class FeaturesMixer(nn.Module):
    """Eq. 6 with ``heads`` heads."""

    def __init__(self, latent_dim: int, heads: int):
        super().__init__()
        if latent_dim % heads:
            raise ValueError(f"latent_dim {latent_dim} is not a multiple of heads {heads}")
        self.heads = heads
        self.query = nn.Linear(latent_dim, latent_dim, bias=False)
        self.key = nn.Linear(latent_dim, latent_dim, bias=False)
        self.value = nn.Linear(latent_dim, latent_dim, bias=False)
        for projection in (self.query, self.key, self.value):
            nn.init.eye_(projection.weight)

    def attention(self, embeddings: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``N x h x K``: each head's attention of each mixed query over the class embeddings."""
        n, (k, d) = weights.shape[0], embeddings.shape
        head_dim = d // self.heads
        q = self.query(weights @ embeddings).view(n, self.heads, head_dim)
        keys = self.key(embeddings).view(k, self.heads, head_dim)
        scores = torch.einsum("nhc,khc->nhk", q, keys) / head_dim ** 0.5
        return scores.softmax(dim=-1)

    def forward(self, embeddings: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(O^0, y)``: mixed embeddings ``N x d`` and mixed targets ``N x K``."""
        sigma = self.attention(embeddings, weights)
        n, (k, d) = weights.shape[0], embeddings.shape
        values = self.value(embeddings).view(k, self.heads, d // self.heads)
        mixed = torch.einsum("nhk,khc->nhc", sigma, values).reshape(n, d)
        return mixed, sigma.mean(dim=1).detach()
