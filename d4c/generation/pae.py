"""Perturbation-aware enhancement (PAE): a fresh random perturbation per sample per step.

In the order of docs/method.md ("D4C"): horizontal flip (p = 0.5); affine (rotation U(-15, 15) degrees, scale
1 + U(-0.05, 0.05), translation U(-0.05, 0.05) per axis in [-1, 1] grid units; bilinear, zero
padding); brightness and contrast factors 1 + U(-0.4, 0.4), multiplied; saturation
``s * x + (1 - s) * mean_c(x)`` with s = 1 + U(-0.4, 0.4); 3x3 blur [[1,2,1],[2,4,2],[1,2,1]] / 16
per channel (p = 0.3, zero padding, applied separably); one square of side int(0.2 * R) at a uniformly drawn centre,
set to 0 (p = 0.3): shifted inside at the top/left border, clipped at the bottom/right one, as in the
reference implementation.

Parameters are drawn for the whole mini-batch as tensors (:func:`sample_perturbations`); they are
applied without a loop over images (:func:`apply_perturbations`): the flip is folded into the
affine sampling grid (negating the x coordinate is an exact flip with ``align_corners=False``), so
flip + affine is one ``grid_sample``; blur and erasing are masks. Everything is differentiable.
The affine matrix ``[[s cos a, -s sin a, tx], [s sin a, s cos a, ty]]`` maps output grid
coordinates to input ones (``F.affine_grid``'s convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from d4c.generation.scg import box_masks

FLIP_P = 0.5
ROTATION_DEG = 15.0
SCALE_RANGE = 0.05
TRANSLATION = 0.05
BRIGHTNESS = CONTRAST = SATURATION = 0.4
BLUR_P = 0.3
ERASE_P = 0.3
ERASE_FRACTION = 0.2
_UNIFORMS_PER_SAMPLE = 12


@dataclass
class PerturbationParams:
    """One mini-batch of perturbation parameters, one entry per sample (all tensors of length N)."""

    flip: torch.Tensor        # bool
    angle: torch.Tensor       # radians
    scale: torch.Tensor
    translate_x: torch.Tensor
    translate_y: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    blur: torch.Tensor        # bool
    erase: torch.Tensor       # bool
    erase_y: torch.Tensor     # int64 centre row
    erase_x: torch.Tensor     # int64 centre column

    @classmethod
    def identity(cls, count: int, device: torch.device | str = "cpu") -> "PerturbationParams":
        """Parameters that leave images unchanged (tests switch single perturbations on from here)."""
        zeros, ones = torch.zeros(count, device=device), torch.ones(count, device=device)
        off = torch.zeros(count, dtype=torch.bool, device=device)
        centre = torch.zeros(count, dtype=torch.long, device=device)
        return cls(off, zeros, ones, zeros, zeros, ones, ones, ones, off.clone(), off.clone(), centre, centre.clone())

    def to(self, device: torch.device | str) -> "PerturbationParams":
        return PerturbationParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def sample_perturbations(count: int, resolution: int, generator: torch.Generator,
                         dtype: torch.dtype = torch.float32) -> PerturbationParams:
    """Draw the parameters of ``count`` perturbations with one ``torch.rand`` call on ``generator``'s device."""
    u = torch.rand(count, _UNIFORMS_PER_SAMPLE, generator=generator, device=generator.device, dtype=dtype)
    sym = 2 * u - 1  # U(-1, 1)
    return PerturbationParams(
        flip=u[:, 0] < FLIP_P,
        angle=sym[:, 1] * math.radians(ROTATION_DEG),
        scale=1 + SCALE_RANGE * sym[:, 2],
        translate_x=TRANSLATION * sym[:, 3],
        translate_y=TRANSLATION * sym[:, 4],
        brightness=1 + BRIGHTNESS * sym[:, 5],
        contrast=1 + CONTRAST * sym[:, 6],
        saturation=1 + SATURATION * sym[:, 7],
        blur=u[:, 8] < BLUR_P,
        erase=u[:, 9] < ERASE_P,
        erase_y=(u[:, 10] * resolution).long().clamp(max=resolution - 1),
        erase_x=(u[:, 11] * resolution).long().clamp(max=resolution - 1),
    )


def flip_affine(images: torch.Tensor, params: PerturbationParams) -> torch.Tensor:
    """Horizontal flip (where drawn) followed by the affine warp, as one bilinear ``grid_sample`` (zero padding)."""
    cos, sin, s = params.angle.cos(), params.angle.sin(), params.scale
    theta = torch.stack([
        torch.stack([s * cos, -s * sin, params.translate_x], dim=1),
        torch.stack([s * sin, s * cos, params.translate_y], dim=1),
    ], dim=1).to(images.dtype)
    # flip(x)(p) = x(F p) with F = diag(-1, 1): flipping first negates the first row of [A | t].
    sign = torch.where(params.flip, -1.0, 1.0).to(images.dtype)
    theta = torch.cat([theta[:, :1] * sign[:, None, None], theta[:, 1:]], dim=1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def color_jitter(images: torch.Tensor, params: PerturbationParams) -> torch.Tensor:
    """Brightness and contrast as multiplications, then saturation ``s x + (1 - s) mean_c(x)``."""
    factor = (params.brightness * params.contrast).to(images.dtype).view(-1, 1, 1, 1)
    images = images * factor
    s = params.saturation.to(images.dtype).view(-1, 1, 1, 1)
    return s * images + (1 - s) * images.mean(dim=1, keepdim=True)


def blur(images: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """The 3x3 blur [[1,2,1],[2,4,2],[1,2,1]] / 16 per channel (zero padding) on the samples where ``where`` is True.

    Computed separably, [1,2,1] / 4 along each axis, with shifted slices: exact, and far cheaper on
    CPUs than a depthwise ``conv2d``.
    """
    padded = F.pad(images, (1, 1, 1, 1))
    rows = padded[..., :-2] + 2 * padded[..., 1:-1] + padded[..., 2:]
    blurred = (rows[..., :-2, :] + 2 * rows[..., 1:-1, :] + rows[..., 2:, :]) / 16
    return torch.where(where.view(-1, 1, 1, 1), blurred, images)


def erase_masks(params: PerturbationParams, height: int, width: int) -> torch.Tensor:
    """``N x 1 x H x W`` masks, 1 on each drawn square (side int(0.2 H)), 0 elsewhere.

    As in the reference implementation, a square reaching past the top or left border is shifted
    inside (``y1 = max(cy - side // 2, 0)``, ``y2 = min(y1 + side, H)``), so only the bottom and
    right borders clip it.
    """
    side = int(ERASE_FRACTION * height)
    sides = torch.full_like(params.erase_y, side)
    top, left = (params.erase_y - side // 2).clamp(min=0), (params.erase_x - side // 2).clamp(min=0)
    squares = torch.stack([top, left, sides, sides], dim=1)
    return box_masks(squares, height, width, torch.bool) & params.erase.view(-1, 1, 1, 1)


def erase(images: torch.Tensor, params: PerturbationParams) -> torch.Tensor:
    """Set each drawn square to 0."""
    masks = erase_masks(params, images.shape[-2], images.shape[-1])
    return images.masked_fill(masks, 0.0)


def apply_perturbations(images: torch.Tensor, params: PerturbationParams) -> torch.Tensor:
    """Apply every perturbation of ``params`` in the documented order (flip, affine, colour, blur, erase)."""
    images = flip_affine(images, params)
    images = color_jitter(images, params)
    images = blur(images, params.blur)
    return erase(images, params)


def perturb(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Draw fresh parameters for every sample of ``images`` and apply them."""
    params = sample_perturbations(images.shape[0], images.shape[-1], generator, dtype=images.dtype)
    return apply_perturbations(images, params)
