"""Model families: the one place that knows how a CLIP implementation is built (docs/design.md, "Adding a model family").

Two families are supported: OpenAI's ``clip.model.CLIP`` (package ``clip``, ``--model_type openai``)
and open_clip's ``open_clip.CLIP`` / ``CustomTextCLIP`` (``--model_type open_clip``). Quantization,
reconstruction, generation and evaluation ask :func:`family_of` instead of checking classes:

* the input: ``resolution``, ``mean`` / ``std`` of the normalised pixel space;
* the text: ``tokenize`` (the model's own tokenizer and context length);
* the image tower's kind (``vit`` or ``resnet``) and, for transformers, the residual attention
  blocks of each tower with their module names and tensor layout (``[L, N, D]`` sequence-first in
  OpenAI's towers, ``[N, L, D]`` batch-first in open_clip's), attention masks passed at call time
  or held by the block;
* which tokens of a tower can reach its output (reconstruction's ``token_loss: relevant``);
* whether the model can be quantized at all (:meth:`ClipFamily.check_supported`: one sentence
  naming what is not supported).

open_clip is imported only when an open_clip model is met (it pulls in timm and transformers).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Callable, ClassVar, Sequence

import torch
from torch import nn

from d4c.data.clip_tokenizer import clip_tokenizer
from d4c.data.transforms import CLIP_MEAN, CLIP_STD
from d4c.errors import D4CError

MODEL_TYPES = ("openai", "open_clip")
VIT, RESNET = "vit", "resnet"

Tokenizer = Callable[[Sequence[str]], torch.Tensor]


@dataclass(frozen=True)
class TransformerTower:
    """The residual attention blocks of one transformer tower, in forward order."""

    prefix: str
    """Module name of the block list in the model (``visual.transformer.resblocks``); block i is ``prefix.i``."""
    blocks: tuple[nn.Module, ...]
    batch_first: bool
    """True when the blocks take ``[N, L, D]`` tokens (open_clip), False for ``[L, N, D]`` (OpenAI)."""

    @property
    def batch_axis(self) -> int:
        return 0 if self.batch_first else 1


BOTTLENECK_CLASSES = (("clip.model", "Bottleneck"), ("open_clip.modified_resnet", "Bottleneck"))
"""(module, class name) of each family's ModifiedResNet Bottleneck (same layers, ``relu*`` or ``act*`` activations)."""


def is_bottleneck(module: nn.Module) -> bool:
    """True for a ModifiedResNet Bottleneck of either family (without importing open_clip)."""
    return (type(module).__module__, type(module).__name__) in BOTTLENECK_CLASSES


def bottleneck_activation(block: nn.Module, k: int) -> nn.Module:
    """The k-th activation of a Bottleneck: ``relu{k}`` in OpenAI's ModifiedResNet, ``act{k}`` in open_clip's."""
    return getattr(block, f"relu{k}", None) or getattr(block, f"act{k}")


def output_token_mask(batch: int, length: int, positions: torch.Tensor | slice, device: torch.device) -> torch.Tensor:
    output = torch.zeros(batch, length, dtype=torch.bool, device=device)
    output[:, positions] = True
    return output


class ClipFamily:
    """What the pipeline needs to know about one loaded CLIP model of a family."""

    model_type: ClassVar[str]

    def __init__(self, model: nn.Module, tokenizer: Tokenizer | None = None) -> None:
        self.model = model
        self._tokenizer = tokenizer

    # -- input and text ----------------------------------------------------------------------------------------------
    @property
    def resolution(self) -> int:
        """Side of the square input images, in pixels."""
        raise NotImplementedError

    @property
    def context_length(self) -> int:
        return int(self.model.context_length)

    @property
    def mean(self) -> tuple[float, float, float]:
        """Per-channel mean of the normalisation (pixels in [0, 1])."""
        return CLIP_MEAN

    @property
    def std(self) -> tuple[float, float, float]:
        return CLIP_STD

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's own tokenizer, one object per model (memos may key on it): ``texts -> [len(texts),
        context_length]`` token ids, too long texts truncated."""
        raise NotImplementedError

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """``[len(texts), context_length]`` token ids of the model's own tokenizer (too long texts truncated)."""
        return self.tokenizer(list(texts))

    # -- structure -----------------------------------------------------------------------------------------------------
    @property
    def image_kind(self) -> str | None:
        """``vit``, ``resnet``, or None for an image tower d4c does not know."""
        raise NotImplementedError

    @property
    def image_tower(self) -> TransformerTower | None:
        """The image transformer's blocks (ViT image towers), else None."""
        raise NotImplementedError

    @property
    def text_tower(self) -> TransformerTower:
        raise NotImplementedError

    @property
    def image_attentions(self) -> list[nn.Module]:
        """The self-attention module of every image-transformer block (PSE hooks them)."""
        tower = self.image_tower
        return [] if tower is None else [block.attn for block in tower.blocks]

    def check_supported(self, name: str = "this model") -> None:
        """Raise a one-sentence :class:`D4CError` (parameter ``model``) when d4c cannot quantize model ``name``."""
        if self.image_kind is None:
            raise D4CError(f"{name} has an image tower of type {type(self.model.visual).__name__}; d4c quantizes ViT "
                           "(VisionTransformer) and ResNet (ModifiedResNet) image towers only.", "model")

    # -- which tokens reach the output (reconstruction, token_loss: relevant) ---------------------------------------
    def image_token_positions(self, images: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(valid [N, L] or None for all, output [N, L])`` of a ViT's tokens: every patch reaches the output."""
        length = self.model.visual.positional_embedding.shape[0]
        return None, output_token_mask(images.shape[0], length, 0, images.device)  # the class token

    def text_token_positions(self, tokens: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(valid, output)`` of the text tokens: causal attention keeps positions after the end-of-text token
        (the largest id) away from it."""
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        eot = tokens.argmax(dim=-1, keepdim=True)
        return positions <= eot, positions == eot


class OpenAIFamily(ClipFamily):
    """``clip.model.CLIP``: sequence-first towers, masks held by the blocks, CLIP's normalisation."""

    model_type = "openai"

    @property
    def resolution(self) -> int:
        return int(self.model.visual.input_resolution)

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer or clip_tokenizer(self.context_length)

    @property
    def image_kind(self) -> str | None:
        import clip.model

        if isinstance(self.model.visual, clip.model.VisionTransformer):
            return VIT
        if isinstance(self.model.visual, clip.model.ModifiedResNet):
            return RESNET
        return None

    @property
    def image_tower(self) -> TransformerTower | None:
        if self.image_kind != VIT:
            return None
        return TransformerTower("visual.transformer.resblocks", tuple(self.model.visual.transformer.resblocks), False)

    @property
    def text_tower(self) -> TransformerTower:
        return TransformerTower("transformer.resblocks", tuple(self.model.transformer.resblocks), False)


_TOKENIZERS: "weakref.WeakKeyDictionary[nn.Module, Tokenizer]" = weakref.WeakKeyDictionary()


def attach_tokenizer(model: nn.Module, tokenizer: Tokenizer) -> None:
    """Make ``family_of(model).tokenize`` use ``tokenizer`` (the loader attaches an open_clip model's own)."""
    _TOKENIZERS[model] = tokenizer


def model_type_of(model: nn.Module) -> str:
    """``open_clip`` for models of the ``open_clip`` package, else ``openai``."""
    return "open_clip" if type(model).__module__.split(".")[0] == "open_clip" else "openai"


def family_of(model: nn.Module) -> ClipFamily:
    """The family adapter of ``model`` (cheap: made on every call; the attached tokenizer, if any, is reused)."""
    if model_type_of(model) == "open_clip":
        from d4c.models.open_clip_family import OpenClipFamily

        return OpenClipFamily(model, _TOKENIZERS.get(model))
    return OpenAIFamily(model, _TOKENIZERS.get(model))
