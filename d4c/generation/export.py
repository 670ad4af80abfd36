"""PNG export of pseudo images (``--img_path``): de-normalised with the model's mean / std, clipped to [0, 255]."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from d4c.data.transforms import CLIP_MEAN, CLIP_STD, denormalize
from d4c.io import atomic_path, write_json


def to_uint8(images: torch.Tensor, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> np.ndarray:
    """``N x 3 x H x W`` pixels normalised with ``mean`` / ``std`` -> ``N x H x W x 3`` uint8 RGB (rounded,
    clipped), in one operation."""
    rgb = (denormalize(images.detach().float().cpu(), mean, std) * 255).round().clamp(0, 255).to(torch.uint8)
    return rgb.permute(0, 2, 3, 1).contiguous().numpy()


def save_png_images(images: torch.Tensor, folder: str | Path, captions: Sequence[str] | None = None,
                    mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> list[Path]:
    """Write ``folder/00000.png`` ... one PNG per image, each atomically; return the paths.

    With ``captions`` (D4C's target prompt of each image), ``folder/captions.json`` maps file names to them.
    ``mean`` / ``std``: the model's normalisation (OpenAI CLIP's by default).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(len(images) - 1)))
    paths = []
    for index, pixels in enumerate(to_uint8(images, mean, std)):
        path = folder / f"{index:0{width}d}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(pixels).save(tmp, format="PNG")
        paths.append(path)
    if captions is not None:
        write_json(folder / "captions.json", {p.name: c for p, c in zip(paths, captions)})
    return paths
