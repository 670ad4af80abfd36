"""CLIP architecture hyper-parameters, by name.

The OpenAI shapes are those of the released checkpoints (what ``clip.model.build_model`` infers
from their state dicts). They let tests and benchmarks build randomly initialised full-size
models with ``--model random:<name>``: weights do not change timings, and no download is needed.
The small shapes are the offline zoo's (trained by ``scripts/train_zoo.py``) and the small random
models of the benchmarks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Union

import torch
from clip.model import CLIP

VisionLayers = Union[int, tuple[int, int, int, int]]


@dataclass(frozen=True)
class ClipArchitecture:
    """Arguments of ``clip.model.CLIP``; heads follow ``build_model`` (width // 64)."""

    embed_dim: int
    image_resolution: int
    vision_layers: VisionLayers
    vision_width: int
    vision_patch_size: int | None
    transformer_width: int
    transformer_layers: int
    context_length: int = 77
    vocab_size: int = 49408

    @property
    def is_vit(self) -> bool:
        return isinstance(self.vision_layers, int)

    @property
    def transformer_heads(self) -> int:
        # clip.model.build_model infers the text heads this way; a checkpoint saved from
        # a model with other head counts would be rebuilt wrongly on load.
        return max(1, self.transformer_width // 64)

    def build(self, seed: int | None = None) -> CLIP:
        """A float32 ``clip.model.CLIP`` of this shape, in eval mode (seeded when ``seed`` is given)."""
        if seed is not None:
            torch.manual_seed(seed)
        model = CLIP(
            self.embed_dim,
            self.image_resolution,
            self.vision_layers,
            self.vision_width,
            self.vision_patch_size,
            self.context_length,
            self.vocab_size,
            self.transformer_width,
            self.transformer_heads,
            self.transformer_layers,
        )
        return model.float().eval()

    def as_dict(self) -> dict:
        return asdict(self)


OPENAI_ARCHITECTURES: dict[str, ClipArchitecture] = {
    "RN50": ClipArchitecture(1024, 224, (3, 4, 6, 3), 64, None, 512, 12),
    "RN101": ClipArchitecture(512, 224, (3, 4, 23, 3), 64, None, 512, 12),
    "RN50x4": ClipArchitecture(640, 288, (4, 6, 10, 6), 80, None, 640, 12),
    "RN50x16": ClipArchitecture(768, 384, (6, 8, 18, 8), 96, None, 768, 12),
    "RN50x64": ClipArchitecture(1024, 448, (3, 15, 36, 10), 128, None, 1024, 12),
    "ViT-B/32": ClipArchitecture(512, 224, 12, 768, 32, 512, 12),
    "ViT-B/16": ClipArchitecture(512, 224, 12, 768, 16, 512, 12),
    "ViT-L/14": ClipArchitecture(768, 224, 24, 1024, 14, 768, 12),
    "ViT-L/14@336px": ClipArchitecture(768, 336, 24, 1024, 14, 768, 12),
}

# Small shapes: the benchmark models of issue 5 (224 px; ViT 4 x 256, patch 32; ResNet
# layers (1,1,1,1) width 32; text 4 x 256) and the two offline-zoo models.
SMALL_ARCHITECTURES: dict[str, ClipArchitecture] = {
    "small-vit": ClipArchitecture(256, 224, 4, 256, 32, 256, 4),
    "small-rn": ClipArchitecture(256, 224, (1, 1, 1, 1), 32, None, 256, 4),
    # The zoo's text tower is 64 wide: its 49408 x width token table dominates the file size.
    "tiny-vit": ClipArchitecture(64, 32, 4, 128, 4, 64, 4),
    "tiny-rn": ClipArchitecture(64, 64, (1, 1, 1, 1), 8, None, 64, 4),
}

RANDOM_PREFIX = "random:"


def random_model_names() -> list[str]:
    """Names accepted as ``--model random:<name>`` (randomly initialised, for timing only)."""
    return [RANDOM_PREFIX + n for n in list(OPENAI_ARCHITECTURES) + list(SMALL_ARCHITECTURES)]


def architecture_by_name(name: str) -> ClipArchitecture | None:
    """The architecture called ``name`` (OpenAI or small), or None."""
    return OPENAI_ARCHITECTURES.get(name) or SMALL_ARCHITECTURES.get(name)


def architecture_of_state_dict(state_dict: dict) -> ClipArchitecture:
    """The architecture a CLIP state dict holds, inferred as ``clip.model.build_model`` infers it.

    Raises KeyError / IndexError for a state dict that is not a CLIP model's.
    """
    if "visual.proj" in state_dict:
        conv1 = state_dict["visual.conv1.weight"]
        vision_layers: VisionLayers = len([k for k in state_dict if k.startswith("visual.")
                                           and k.endswith(".attn.in_proj_weight")])
        patch = int(conv1.shape[-1])
        grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        width, resolution = int(conv1.shape[0]), patch * grid
    else:
        vision_layers = tuple(len({k.split(".")[2] for k in state_dict if k.startswith(f"visual.layer{b}.")})
                              for b in (1, 2, 3, 4))
        width = int(state_dict["visual.layer1.0.conv1.weight"].shape[0])
        patch = None
        resolution = round((state_dict["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5) * 32
    return ClipArchitecture(
        embed_dim=int(state_dict["text_projection"].shape[1]),
        image_resolution=int(resolution),
        vision_layers=vision_layers,
        vision_width=width,
        vision_patch_size=patch,
        transformer_width=int(state_dict["ln_final.weight"].shape[0]),
        transformer_layers=len({k.split(".")[2] for k in state_dict if k.startswith("transformer.resblocks.")}),
        context_length=int(state_dict["positional_embedding"].shape[0]),
        vocab_size=int(state_dict["token_embedding.weight"].shape[0]),
    )


def describe_architecture(arch: ClipArchitecture) -> str:
    """``RN50`` for a known shape, else its main numbers (``ViT 12 x 768, patch 32, embed 512``)."""
    known = next((n for n, a in {**OPENAI_ARCHITECTURES, **SMALL_ARCHITECTURES}.items() if a == arch), None)
    if arch.is_vit:
        shape = f"ViT {arch.vision_layers} x {arch.vision_width}, patch {arch.vision_patch_size}"
    else:
        shape = f"ResNet layers {tuple(arch.vision_layers)}, width {arch.vision_width}"
    shape += f", {arch.image_resolution} px, embed {arch.embed_dim}, text {arch.transformer_layers} x {arch.transformer_width}"
    return f"{known} ({shape})" if known else shape
