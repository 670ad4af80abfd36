"""Normalisation-flow-based attention (section 3.3.3, eqs. 7-9).

* ``mapping^j`` (eq. 7): a normalising flow per level j, ``flow_transforms`` planar
  transformations (Rezende & Mohamed 2015, the paper's reference [35]) ``f(z) = z + u_hat
  tanh(w^T z + b)``, with ``u_hat = u + (m(w^T u) - w^T u) w / |w|^2``, ``m(x) = -1 + softplus(x)``,
  so that ``w^T u_hat >= -1`` and f is invertible; ``log |det df/dz| = log |1 + u_hat^T (1 -
  tanh^2(w^T z + b)) w|``. The paper trains no density, so the log-determinant is not part of
  any loss; it and :meth:`PlanarFlow.inverse` document (and test) that each mapping is a flow.
* ``O^j = Transformer((O^{j-1}, z^j))`` (eq. 8): the two vectors are a sequence of two tokens
  through ``transformer_blocks`` pre-norm Transformer encoder blocks (``heads`` heads, MLP 2d,
  no dropout); ``O^j`` is the first token's output, so each level's embedding attends to that
  level's noise. The generator then draws ``image = G(O^J)`` (eq. 9).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INIT_STD = 0.1
INVERSE_STEPS = 80


class PlanarFlow(nn.Module):
    """One invertible planar transformation of ``d``-dimensional vectors."""

    def __init__(self, dim: int):
        super().__init__()
        self.u = nn.Parameter(torch.randn(dim) * INIT_STD)
        self.w = nn.Parameter(torch.randn(dim) * INIT_STD)
        self.b = nn.Parameter(torch.zeros(()))

    def u_hat(self) -> torch.Tensor:
        """``u`` corrected so that ``w^T u_hat >= -1`` (the invertibility condition)."""
        wu = self.w @ self.u
        return self.u + (F.softplus(wu) - 1 - wu) * self.w / self.w.square().sum().clamp(min=1e-12)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f(z), log |det df/dz|)`` for ``z`` of shape ``N x d``."""
        u = self.u_hat()
        activation = torch.tanh(z @ self.w + self.b)
        psi = (1 - activation.square())[:, None] * self.w
        log_det = torch.log((1 + psi @ u).abs().clamp(min=1e-12))
        return z + activation[:, None] * u, log_det

    @torch.no_grad()
    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``f^{-1}(y)``: ``alpha = w^T z`` solves ``alpha + w^T u_hat tanh(alpha + b) = w^T y`` (increasing
        in alpha), found by bisection; then ``z = y - u_hat tanh(alpha + b)``."""
        u = self.u_hat()
        wu, target = self.w @ u, y @ self.w
        low, high = target - wu.abs() - 1, target + wu.abs() + 1
        for _ in range(INVERSE_STEPS):
            mid = (low + high) / 2
            above = mid + wu * torch.tanh(mid + self.b) > target
            high, low = torch.where(above, mid, high), torch.where(above, low, mid)
        alpha = (low + high) / 2
        return y - torch.tanh(alpha + self.b)[:, None] * u


class LevelMapping(nn.Module):
    """``mapping^j``: a chain of planar transformations."""

    def __init__(self, dim: int, transforms: int):
        super().__init__()
        self.transforms = nn.ModuleList(PlanarFlow(dim) for _ in range(transforms))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_det = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype)
        for transform in self.transforms:
            z, step = transform(z)
            log_det = log_det + step
        return z, log_det

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        for transform in reversed(self.transforms):
            y = transform.inverse(y)
        return y


class FlowAttention(nn.Module):
    """Eqs. 7-8 for ``levels`` levels: ``O^0, z -> O^J``."""

    def __init__(self, dim: int, levels: int, heads: int, transforms: int, blocks: int):
        super().__init__()
        self.mappings = nn.ModuleList(LevelMapping(dim, transforms) for _ in range(levels))
        self.blocks = nn.ModuleList(
            nn.ModuleList(nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0,
                                                     activation="gelu", batch_first=True, norm_first=True)
                          for _ in range(blocks))
            for _ in range(levels))

    def forward(self, embedding: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        out = embedding
        for mapping, blocks in zip(self.mappings, self.blocks):
            level_noise, _ = mapping(z)
            sequence = torch.stack([out, level_noise], dim=1)
            for block in blocks:
                sequence = block(sequence)
            out = sequence[:, 0]
        return out
