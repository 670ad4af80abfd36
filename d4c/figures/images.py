"""``images``: a grid of pseudo images per method, each captioned with what the FP model sees in it.

Rows are methods (Gaussian noise, BNS / PSE, D4C configs 0-3, any other cached method), columns
the first images of each set. Under every image: D4C's target prompt (``→``) and the FP model's top
prompt among the generation prompts with its probability (CLIP's own softmax,
``logit_scale · cos``). The JSON holds, per method, every shown image's target, top prompt and
probability, and over the whole set the share of images whose top prompt is their target, the
mean top probability and how many distinct prompts win.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from d4c.data.transforms import CLIP_MEAN, CLIP_STD
from d4c.figures.output import new_figure
from d4c.figures.names import row_name
from d4c.generation.diagnostics import image_features
from d4c.generation.pgsi import encode_text_targets

CAPTION_WIDTH = 24
"""Characters per caption line."""


@dataclass
class ImageSet:
    """One method's images for the grid."""

    row: str
    images: torch.Tensor
    """``N x 3 x R x R`` in the model's normalised pixel space."""
    targets: torch.Tensor | None = None
    """D4C's prompt index of each image."""
    source: str = ""


def normalization(preprocess: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std of the ``Normalize`` step of a model's preprocessing (CLIP's when it has none)."""
    for step in getattr(preprocess, "transforms", ()):
        if type(step).__name__ == "Normalize":
            return tuple(float(v) for v in step.mean), tuple(float(v) for v in step.std)
    return CLIP_MEAN, CLIP_STD


def to_rgb(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalised pixels -> ``N x H x W x 3`` values in [0, 1] (clipped), as the PNG export shows them."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.float().cpu() * std_t + mean_t).clamp(0, 1).permute(0, 2, 3, 1)


@torch.no_grad()
def fp_top_prompts(model: torch.nn.Module, images: torch.Tensor, prompts: Sequence[str],
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The FP model's top prompt index and its probability for each image (softmax of ``logit_scale · cos``)."""
    features = image_features(model, images.to(device))
    texts = encode_text_targets(model, prompts, device)
    probabilities = (model.logit_scale.exp().float() * features @ texts.t()).softmax(dim=1)
    top = probabilities.max(dim=1)
    return top.indices.cpu(), top.values.cpu()


def _caption(target: str | None, top: str, probability: float) -> str:
    lines = [] if target is None else textwrap.wrap(f"→ {target}", CAPTION_WIDTH)
    return "\n".join(lines + textwrap.wrap(f"FP: {top} ({probability:.2f})", CAPTION_WIDTH))


def images_figure(sets: Sequence[ImageSet], model: torch.nn.Module, prompts: Sequence[str], device: torch.device,
                  per_method: int = 8, mean: Sequence[float] = CLIP_MEAN,
                  std: Sequence[float] = CLIP_STD) -> tuple[Any, dict[str, Any]]:
    """The grid figure and its data.

    Args:
        sets: the methods' images, in row order.
        model: the full-precision CLIP the images were made from.
        prompts: the generation prompts (D4C's targets index them).
        device: where the FP model runs.
        per_method: images shown per method (the first ones of each set).
        mean, std: the model's normalisation (to show the pixels as RGB).
    """
    columns = max(1, min(per_method, max(len(s.images) for s in sets)))
    figure = new_figure(1.25 * columns + 0.6, 1.9 * len(sets))
    grid = figure.subplots(len(sets), columns, squeeze=False)
    data: dict[str, Any] = {"prompts": list(prompts), "per_method": columns, "methods": []}
    for r, image_set in enumerate(sets):
        top, probability = fp_top_prompts(model, image_set.images, prompts, device)
        targets = image_set.targets
        summary: dict[str, Any] = {
            "method": image_set.row, "source": image_set.source, "images": len(image_set.images),
            "mean_top_probability": float(probability.mean()),
            "distinct_top_prompts": int(top.unique().numel()),
        }
        if targets is not None:
            summary["top_is_target"] = float((top == targets.cpu()).float().mean())
        rgb = to_rgb(image_set.images[:columns], mean, std)
        shown = []
        for c in range(columns):
            ax = grid[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(rgb):
                ax.set_axis_off()
                continue
            ax.imshow(rgb[c].numpy(), interpolation="nearest")
            target = None if targets is None else prompts[int(targets[c])]
            ax.set_xlabel(_caption(target, prompts[int(top[c])], float(probability[c])), fontsize=6)
            if c == 0:
                ax.set_ylabel(row_name(image_set.row), fontsize=9)
            shown.append({"index": c, "target": target, "top_prompt": prompts[int(top[c])],
                          "top_probability": float(probability[c])})
        summary["shown"] = shown
        data["methods"].append(summary)
    figure.suptitle("Pseudo images; → D4C target prompt, FP: the FP model's top generation prompt (probability)",
                    fontsize=9)
    figure.tight_layout()
    return figure, data
