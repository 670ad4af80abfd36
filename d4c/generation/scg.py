"""Structural Contrastive Generation (SCG) geometry: foreground boxes, their masks, batched crop-resize.

Per image, once, a box of area ratio ``r ~ U(0.4, 0.7)`` with the image's aspect,
``h = floor(sqrt(r * H * H))`` (``floor(sqrt(r * R^2))`` for square images), placed uniformly.
Every step the foreground view is the box cropped and resized back to full size (bilinear,
``align_corners=False``), for the whole mini-batch in one ``grid_sample`` whose sampling
coordinates are exactly those of ``F.interpolate`` on each crop (including its edge clamping);
the background view is the image with the box zeroed plus fresh ``0.1 * N(0, 1)`` noise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

AREA_RATIO_RANGE = (0.4, 0.7)
BACKGROUND_NOISE = 0.1


def sample_boxes(count: int, height: int, width: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``count`` foreground boxes; returns ``(boxes, ratios)`` on the generator's device.

    ``boxes`` is ``count x 4`` int64 ``(top, left, box_height, box_width)``; ``ratios`` the drawn r.
    """
    device = generator.device
    lo, hi = AREA_RATIO_RANGE
    u = torch.rand(count, 3, generator=generator, device=device, dtype=torch.float64)
    ratios = lo + (hi - lo) * u[:, 0]
    box_h = torch.floor(torch.sqrt(ratios * height * height)).long().clamp(1, height)
    box_w = torch.floor(torch.sqrt(ratios * width * width)).long().clamp(1, width)
    top = torch.floor(u[:, 1] * (height - box_h + 1)).long()
    left = torch.floor(u[:, 2] * (width - box_w + 1)).long()
    return torch.stack([top, left, box_h, box_w], dim=1), ratios


def box_masks(boxes: torch.Tensor, height: int, width: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``N x 1 x H x W`` masks, 1 inside each box and 0 outside."""
    top, left, box_h, box_w = boxes.unbind(dim=1)
    rows = torch.arange(height, device=boxes.device)
    cols = torch.arange(width, device=boxes.device)
    in_rows = (rows >= top[:, None]) & (rows < (top + box_h)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + box_w)[:, None])
    return (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1).to(dtype)


def _source_coordinates(start: torch.Tensor, length: torch.Tensor, out_size: int, dtype: torch.dtype) -> torch.Tensor:
    """Pixel coordinates (in the full image) that ``F.interpolate(bilinear, align_corners=False)`` samples.

    For output index j of a crop of ``length`` pixels: ``(j + 0.5) * length / out - 0.5``, clamped to
    ``[0, length - 1]`` as interpolate does, then shifted by the crop's ``start``.
    """
    j = torch.arange(out_size, device=start.device, dtype=dtype)
    scale = (length.to(dtype) / out_size)[:, None]
    src = ((j + 0.5) * scale - 0.5).clamp(min=0.0)
    src = torch.minimum(src, (length - 1).to(dtype)[:, None])
    return src + start.to(dtype)[:, None]


def crop_resize(images: torch.Tensor, boxes: torch.Tensor, out_size: int | None = None) -> torch.Tensor:
    """Crop each image's box and resize it to ``out_size`` (default: the image size), in one ``grid_sample``.

    Equals ``F.interpolate(x[i:i+1, :, t:t+h, l:l+w], (out, out), mode="bilinear", align_corners=False)``
    for every i, up to float rounding; differentiable with respect to ``images``.
    """
    n, _, height, width = images.shape
    out_h, out_w = (height, width) if out_size is None else (out_size, out_size)
    top, left, box_h, box_w = boxes.to(images.device).unbind(dim=1)
    ys = _source_coordinates(top, box_h, out_h, images.dtype)
    xs = _source_coordinates(left, box_w, out_w, images.dtype)
    # grid_sample (align_corners=False) maps normalised g to pixel ((g + 1) * size - 1) / 2.
    gy = (2 * ys + 1) / height - 1
    gx = (2 * xs + 1) / width - 1
    grid = torch.stack([gx[:, None, :].expand(n, out_h, out_w), gy[:, :, None].expand(n, out_h, out_w)], dim=-1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def background_views(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``x * (1 - M) + 0.1 * N(0, 1)`` with fresh noise from ``generator``."""
    noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return images * (1 - masks) + BACKGROUND_NOISE * noise
