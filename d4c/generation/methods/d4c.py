"""D4C (docs/method.md, "D4C"): PGSI always; SCG with ``d4c_config`` 1 and 3; PAE with 2 and 3.

* config 0 (PGSI): logits ``n(f_I(x_i)) . t_k / tau``, cross-entropy with the fixed target ``y_i``.
* config 2 (PGSI+PAE): the same on a fresh perturbation of the whole image.
* configs 1 / 3 (SCG, + PAE on the foreground only): foreground crops and backgrounds of the
  mini-batch go through the image encoder in ONE forward; image i's logits are its foreground's
  similarities to every prompt and to every background of its own mini-batch (its own included),
  all over tau; cross-entropy with ``y_i``. The whole image is not encoded.

Total per mini-batch: ``1.0 * CE + 0.1 * TV(x)``. The ablation is this method's option
``d4c_config`` (the paper's ``--d4c_config``); its rows are ``d4c0`` ... ``d4c3``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from d4c.errors import D4CError
from d4c.generation import pae, scg
from d4c.generation.methods.base import GenerationMethod, Option, register
from d4c.generation.pgsi import TAU, draw_targets, encode_text_targets, prompts_digest, text_logits
from d4c.generation.priors import TV_WEIGHT, total_variation
from d4c.generation.settings import GenerationSettings

CONFIGS = (0, 1, 2, 3)
SCG_CONFIGS = (1, 3)
PAE_CONFIGS = (2, 3)


@register
class D4C(GenerationMethod):
    """PGSI + optional SCG and PAE."""

    name = "d4c"
    options = (Option("d4c_config", 3, "D4C ablation: 0 PGSI, 1 PGSI+SCG, 2 PGSI+PAE, 3 PGSI+SCG+PAE", CONFIGS),)

    def __init__(self, model: nn.Module, settings: GenerationSettings, prompts: Sequence[str] | None,
                 device: torch.device) -> None:
        super().__init__(model, settings, prompts, device)
        if not prompts:
            raise D4CError("holds no generation prompts; D4C needs a prompt file's class names and templates.",
                           "prompts")
        config = self.option_values(settings)["d4c_config"]
        self.use_scg = config in SCG_CONFIGS
        self.use_pae = config in PAE_CONFIGS
        self.text_targets = encode_text_targets(model, prompts, self.device)
        self.targets: torch.Tensor | None = None
        self.boxes: torch.Tensor | None = None

    @classmethod
    def rows(cls) -> dict[str, dict[str, Any]]:
        return {f"d4c{config}": {"d4c_config": config} for config in CONFIGS}

    @classmethod
    def recipe_fields(cls, settings: GenerationSettings, prompts: Sequence[str] | None) -> dict[str, Any]:
        return {**cls.option_values(settings), "prompts_sha256": prompts_digest(prompts or []),
                "num_prompts": len(prompts or [])}

    def setup(self, num_images: int, resolution: int, generator: torch.Generator) -> None:
        self.targets = draw_targets(num_images, self.text_targets.shape[0], generator).to(self.device)
        if self.use_scg:
            self.boxes = scg.sample_boxes(num_images, resolution, resolution, generator)[0].to(self.device)

    def state_dict(self) -> dict[str, Any]:
        return {"targets": self.targets, "boxes": self.boxes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.targets = state["targets"].to(self.device)
        self.boxes = state["boxes"].to(self.device) if state.get("boxes") is not None else None

    def logits(self, images: torch.Tensor, index: slice, groups: int,
               generator: torch.Generator) -> torch.Tensor:
        """The logits of ``images``: ``N x K`` (PGSI) or ``N x (K + mini-batch)`` (SCG)."""
        if not self.use_scg:
            views = pae.perturb(images, generator) if self.use_pae else images
            return text_logits(self.encode(views), self.text_targets, TAU)
        boxes = self.boxes[index]
        height, width = images.shape[-2:]
        foreground = scg.crop_resize(images, boxes)
        if self.use_pae:
            foreground = pae.perturb(foreground, generator)
        background = scg.background_views(images, scg.box_masks(boxes, height, width, images.dtype), generator)
        features = F.normalize(self.encode(torch.cat([foreground, background])), dim=-1)
        fg, bg = features.chunk(2)
        n, per_group = fg.shape[0], fg.shape[0] // groups
        to_text = fg @ self.text_targets.t() / TAU
        to_backgrounds = torch.bmm(fg.view(groups, per_group, -1), bg.view(groups, per_group, -1).transpose(1, 2))
        return torch.cat([to_text, to_backgrounds.reshape(n, per_group) / TAU], dim=1)

    def loss(self, images: torch.Tensor, index: slice, groups: int, generator: torch.Generator) -> torch.Tensor:
        logits = self.logits(images, index, groups, generator)
        ce = F.cross_entropy(logits, self.targets[index], reduction="none").view(groups, -1).mean(dim=1).sum()
        return ce + TV_WEIGHT * total_variation(images, groups)
