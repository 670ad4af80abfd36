"""PNG export of pseudo images (``--img_path``): de-normalised with CLIP's mean / std, clipped to [0, 255]."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from d4c.data.transforms import denormalize
from d4c.io import atomic_path, write_json


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``N x 3 x H x W`` normalised pixels -> ``N x H x W x 3`` uint8 RGB (rounded, clipped), in one operation."""
    rgb = (denormalize(images.detach().float().cpu()) * 255).round().clamp(0, 255).to(torch.uint8)
    return rgb.permute(0, 2, 3, 1).contiguous().numpy()


def save_png_images(images: torch.Tensor, folder: str | Path, captions: Sequence[str] | None = None) -> list[Path]:
    """Write ``folder/00000.png`` ... one PNG per image, each atomically; return the paths.

    With ``captions`` (D4C's target prompt of each image), ``folder/captions.json`` maps file names to them.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(len(images) - 1)))
    paths = []
    for index, pixels in enumerate(to_uint8(images)):
        path = folder / f"{index:0{width}d}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(pixels).save(tmp, format="PNG")
        paths.append(path)
    if captions is not None:
        write_json(folder / "captions.json", {p.name: c for p, c in zip(paths, captions)})
    return paths
