"""Measurements of generated images with the full-precision model (no quantization needed).

Used to compare methods and schedules on the images themselves: how well the FP model sees
each image as its D4C target prompt, how diverse the image features are, and how close the
images' BatchNorm statistics are to the running statistics (ResNets).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from d4c.generation.methods.bns import batchnorm_layers, bn_statistics_loss
from d4c.generation.pgsi import TAU, encode_text_targets
from d4c.generation.priors import total_variation_per_image

CHUNK = 64


@torch.no_grad()
def image_features(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """L2-normalised image features, in chunks."""
    return torch.cat([F.normalize(model.encode_image(images[i:i + CHUNK]).float(), dim=-1)
                      for i in range(0, len(images), CHUNK)])


@torch.no_grad()
def bn_statistics_distance(model: torch.nn.Module, images: torch.Tensor) -> float:
    """BNS's statistics term over all images at once (0 when they match every BN layer's running statistics)."""
    terms = []
    hooks = [layer.register_forward_pre_hook(
        lambda m, a: terms.append(bn_statistics_loss(a[0], m.running_mean, m.running_var))) for layer in batchnorm_layers(model)]
    try:
        model.encode_image(images)
    finally:
        for hook in hooks:
            hook.remove()
    return float(torch.stack(terms).sum())


@torch.no_grad()
def image_diagnostics(model: torch.nn.Module, images: torch.Tensor, prompts: Sequence[str] | None = None,
                      targets: torch.Tensor | None = None) -> dict[str, Any]:
    """Diagnostics of ``images`` (CLIP-normalised) under the FP ``model``.

    Always: pixel mean / std, mean TV, mean pairwise cosine similarity of image features
    (lower = more diverse); with BatchNorm layers: the BN-statistics distance; with D4C prompts
    and targets: PGSI cross-entropy (tau = 0.1, whole unperturbed images), top-1 agreement of the
    image with its target prompt among all prompts, and the mean target probability.
    """
    device = next(model.parameters()).device
    images = images.to(device)
    features = image_features(model, images)
    n = len(features)
    similarity = features @ features.t()
    off_diagonal = (similarity.sum() - similarity.diagonal().sum()) / max(n * (n - 1), 1)
    out: dict[str, Any] = {
        "pixel_mean": float(images.mean()),
        "pixel_std": float(images.std()),
        "tv": float(total_variation_per_image(images).mean()),
        "feature_mean_cosine": float(off_diagonal),
    }
    if batchnorm_layers(model):
        out["bn_statistics_distance"] = bn_statistics_distance(model, images)
    if prompts and targets is not None:
        targets = targets.to(device)
        logits = features @ encode_text_targets(model, prompts, device).t() / TAU
        out["pgsi_cross_entropy"] = float(F.cross_entropy(logits, targets))
        out["target_top1_agreement"] = float((logits.argmax(dim=1) == targets).float().mean())
        out["target_probability"] = float(logits.softmax(dim=1).gather(1, targets[:, None]).mean())
        out["distinct_predicted_prompts"] = int(logits.argmax(dim=1).unique().numel())
    return out
