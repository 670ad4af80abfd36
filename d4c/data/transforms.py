"""CLIP's image preprocessing and its normalisation constants."""

from __future__ import annotations

from typing import Sequence

import torch
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

# OpenAI CLIP's per-channel mean and standard deviation of the normalised pixel space.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _to_rgb(image):
    return image.convert("RGB")


def clip_transform(resolution: int) -> Compose:
    """The preprocessing ``clip.load`` returns: bicubic resize, centre crop, RGB, tensor, normalise."""
    return Compose([
        Resize(resolution, interpolation=InterpolationMode.BICUBIC),
        CenterCrop(resolution),
        _to_rgb,
        ToTensor(),
        Normalize(CLIP_MEAN, CLIP_STD),
    ])


def denormalize(images: torch.Tensor, mean: Sequence[float] = CLIP_MEAN,
                std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """Map normalised pixels (``B x 3 x H x W``) back to [0, 1]-scaled RGB (not clipped).

    ``mean`` / ``std`` are the model's normalisation (OpenAI CLIP's by default; open_clip models may
    use others, :attr:`d4c.models.family.ClipFamily.mean`).
    """
    mean = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return images * std + mean
