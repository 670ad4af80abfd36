"""Small open_clip models for the tests: random weights, every tower variant d4c supports (and some it refuses).

Built directly with open_clip's classes (no download): ``micro_open_clip(**variant)`` returns a
float32 eval-mode ``open_clip.CLIP`` (or ``CustomTextCLIP``) with a 1-block ViT or a (1,1,1,1)
ModifiedResNet and a 1-block text transformer. ``register_micro_architecture`` adds its config to
open_clip's registry under a name, so that ``create_model`` / ``--model`` find it like a built-in one.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

MICRO_VIT_CFG = {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16}
MICRO_RN_CFG = {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 64}
MICRO_TEXT_CFG = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}
MICRO_ARCH = "d4c-micro-vit"
"""A registered micro architecture (ViT, GELU): ``register_micro_architecture`` makes it known to open_clip."""

VARIANTS: dict[str, dict[str, Any]] = {
    "vit": {},
    "vit-quickgelu": {"quick_gelu": True},
    "vit-layerscale": {"vision": {"ls_init_value": 0.5}, "text": {"ls_init_value": 0.5}},
    "vit-avgpool-final-ln": {"vision": {"pool_type": "avg", "final_ln_after_pool": True, "no_ln_pre": True}},
    "text-linear-projection": {"text": {"proj_bias": True}},
    "text-bidirectional-last": {"text": {"no_causal_mask": True, "pool_type": "last"}},
    "custom-text": {"custom_text": True},
    "rn": {"vision": MICRO_RN_CFG, "replace_vision": True},
    "rn-quickgelu-custom-text": {"vision": MICRO_RN_CFG, "replace_vision": True, "quick_gelu": True,
                                 "custom_text": True},
}
"""Tower variants d4c supports, by name."""


def micro_config(vision: dict | None = None, text: dict | None = None, quick_gelu: bool = False,
                 replace_vision: bool = False, **extra: Any) -> dict[str, Any]:
    """An open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``, ...) of a micro model."""
    vision_cfg = dict(vision or {}) if replace_vision else {**MICRO_VIT_CFG, **(vision or {})}
    return {"embed_dim": 32, "quick_gelu": quick_gelu, "vision_cfg": vision_cfg,
            "text_cfg": {**MICRO_TEXT_CFG, **(text or {})}, **extra}


def _randomise_batchnorm(model: torch.nn.Module, seed: int) -> None:
    # open_clip zero-initialises each Bottleneck's bn3 (identity residual branches) and leaves the running
    # statistics at 0 / 1: random values make every layer count in a comparison.
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.2, 0.2, generator=generator)
                module.running_mean.uniform_(-0.2, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)


def build_from_config(config: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    """A float32 eval-mode open_clip model of ``config`` with seeded random weights."""
    import open_clip

    config = copy.deepcopy(config)
    custom_text = config.pop("custom_text", False)
    torch.manual_seed(seed)
    model = (open_clip.CustomTextCLIP if custom_text else open_clip.CLIP)(**config)
    _randomise_batchnorm(model, seed)
    return model.float().eval()


def micro_open_clip(variant: str = "vit", seed: int = 0) -> torch.nn.Module:
    """The micro open_clip model of :data:`VARIANTS` ``variant``."""
    spec = copy.deepcopy(VARIANTS[variant])
    custom_text = spec.pop("custom_text", False)
    return build_from_config({**micro_config(**spec), "custom_text": custom_text}, seed)


def register_micro_architecture(folder: Path, name: str = MICRO_ARCH, config: dict | None = None) -> str:
    """Write ``name``'s config into ``folder`` and add it to open_clip's registry (``open_clip.add_model_config``)."""
    import open_clip

    path = Path(folder) / f"{name}.json"
    path.write_text(json.dumps(config or micro_config()))
    open_clip.add_model_config(path)
    return name
