"""open_clip's CLIP models as a family (:mod:`d4c.models.family`): what d4c supports of them, and their layout.

Supported (quantized with the same rules as OpenAI's towers, docs/method.md "What is quantized"):
``open_clip.CLIP`` and ``CustomTextCLIP`` whose image tower is open_clip's ``VisionTransformer``
(token or average pooling, LayerScale, GELU or QuickGELU, ``final_ln_after_pool``, no attentional
pooler) or ``ModifiedResNet``, and whose text tower is open_clip's own transformer (causal or not,
any pooling, ``text_projection`` a Parameter or an ``nn.Linear``). Its transformers are
batch-first ``nn.MultiheadAttention`` blocks in an ``nn.ModuleList``, the attention mask passed
at call time. Not supported, each refused with one sentence: SigLIP, CoCa (attentional pooler,
multimodal decoder), timm image towers, Hugging Face text towers, open_clip's custom attention
blocks (qk_norm, scaled cosine attention, head scaling, extra LayerNorms) and non-square inputs.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from d4c.data.clip_tokenizer import fast_tokenizer
from d4c.errors import D4CError
from d4c.models.family import RESNET, VIT, ClipFamily, Tokenizer, TransformerTower, output_token_mask

SUPPORTED = ("open_clip's VisionTransformer and ModifiedResNet image towers with its own text transformer "
             "(README, \"open_clip models\")")
CUSTOM_BLOCK_KEYS = ("qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc")
REASONS = {
    "siglip": "is a SigLIP model (sigmoid loss with a logit bias)",
    "coca": "is a CoCa model (attentional pooler and multimodal text decoder)",
    "timm": "has a timm image tower",
    "hf": "has a Hugging Face text tower",
    "attentional_pool": "has an attentional pooler on its image tower (CoCa's)",
    "custom_block": "uses open_clip's custom attention blocks (qk_norm, scaled cosine attention, head scaling or "
                    "extra LayerNorms)",
    "cls_emb": "appends a class token to its text (CoCa's text tower)",
}


def unsupported(name: str, reason: str) -> D4CError:
    """The one-sentence refusal of model ``name`` for ``reason`` (a key of :data:`REASONS`)."""
    return D4CError(f"{name} {REASONS[reason]}, which d4c cannot quantize; supported are {SUPPORTED}.", "model")


def config_reason(config: dict[str, Any]) -> str | None:
    """Why an open_clip model config (``open_clip.get_model_config``) is not supported, or None."""
    vision, text = config.get("vision_cfg", {}), config.get("text_cfg", {})
    if config.get("init_logit_bias") is not None:
        return "siglip"
    if "multimodal_cfg" in config:
        return "coca"
    if vision.get("timm_model_name"):
        return "timm"
    if text.get("hf_model_name"):
        return "hf"
    if vision.get("attentional_pool"):
        return "attentional_pool"
    if any(cfg.get(key) for cfg in (vision, text) for key in CUSTOM_BLOCK_KEYS) or \
            "custom" in (vision.get("block_type"), text.get("block_type")):
        return "custom_block"
    if text.get("embed_cls"):
        return "cls_emb"
    return None


@functools.lru_cache(maxsize=4)
def _simple_tokenizer(context_length: int):
    from open_clip.tokenizer import SimpleTokenizer

    return fast_tokenizer(SimpleTokenizer(context_length=context_length))


def _square(size: Any) -> int | None:
    if isinstance(size, (tuple, list)):
        return int(size[0]) if len(size) == 2 and size[0] == size[1] else None
    return int(size)


class OpenClipFamily(ClipFamily):
    """``open_clip.CLIP`` / ``CustomTextCLIP``: batch-first towers, masks passed at call time, the model's own
    normalisation (its ``preprocess_cfg``) and tokenizer (the one attached by the loader, else open_clip's
    ``SimpleTokenizer`` with the model's context length)."""

    model_type = "open_clip"

    @property
    def text_module(self) -> nn.Module:
        """The module holding the text transformer, its mask and pooling (the model itself for ``open_clip.CLIP``)."""
        text = getattr(self.model, "text", None)
        return text if isinstance(text, nn.Module) else self.model

    @property
    def resolution(self) -> int:
        size = _square(self.model.visual.image_size)
        if size is None:
            raise D4CError(f"has non-square input images {tuple(self.model.visual.image_size)}; d4c needs square "
                           "ones.", "model")
        return size

    def _preprocess(self, key: str, legacy: str) -> tuple[float, float, float]:
        visual = self.model.visual
        value = getattr(visual, "preprocess_cfg", {}).get(key) or getattr(visual, legacy, None)
        if value is None:
            return super().mean if key == "mean" else super().std
        return tuple(float(v) for v in (value if isinstance(value, (tuple, list)) else (value,) * 3))

    @property
    def mean(self) -> tuple[float, float, float]:
        return self._preprocess("mean", "image_mean")

    @property
    def std(self) -> tuple[float, float, float]:
        return self._preprocess("std", "image_std")

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer or _simple_tokenizer(self.context_length)

    @property
    def image_kind(self) -> str | None:
        from open_clip.modified_resnet import ModifiedResNet
        from open_clip.transformer import VisionTransformer

        if isinstance(self.model.visual, VisionTransformer):
            return VIT
        if isinstance(self.model.visual, ModifiedResNet):
            return RESNET
        return None

    @property
    def image_tower(self) -> TransformerTower | None:
        if self.image_kind != VIT:
            return None
        transformer = self.model.visual.transformer
        return TransformerTower("visual.transformer.resblocks", tuple(transformer.resblocks), transformer.batch_first)

    @property
    def text_tower(self) -> TransformerTower:
        prefix = "transformer.resblocks" if self.text_module is self.model else "text.transformer.resblocks"
        transformer = self.text_module.transformer
        return TransformerTower(prefix, tuple(transformer.resblocks), transformer.batch_first)

    def _reason(self) -> str | None:
        from open_clip.transformer import ResidualAttentionBlock, TextTransformer

        model, visual = self.model, self.model.visual
        if getattr(model, "logit_bias", None) is not None:
            return "siglip"
        if type(model).__name__ == "CoCa":
            return "coca"
        if type(visual).__name__ == "TimmModel":
            return "timm"
        text = getattr(model, "text", None)
        if text is not None and not isinstance(text, TextTransformer):
            return "hf"
        if getattr(visual, "attn_pool", None) is not None:
            return "attentional_pool"
        towers = [self.text_tower] + ([self.image_tower] if self.image_kind == VIT else [])
        if any(type(block) is not ResidualAttentionBlock for tower in towers for block in tower.blocks):
            return "custom_block"
        if getattr(self.text_module, "cls_emb", None) is not None:
            return "cls_emb"
        return None

    def check_supported(self, name: str = "this model") -> None:
        reason = self._reason()
        if reason is not None:
            raise unsupported(name, reason)
        super().check_supported(name)
        self.resolution  # noqa: B018 - raises for non-square inputs

    def image_token_positions(self, images: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        length = self.model.visual.positional_embedding.shape[0]
        pool = getattr(self.model.visual, "pool_type", "tok")
        positions = {"tok": 0, "avg": slice(1, None)}.get(pool, slice(None))  # avg: every patch token, none: all
        return None, output_token_mask(images.shape[0], length, positions, images.device)

    def text_token_positions(self, tokens: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        text = self.text_module
        pool = text.text_pool_type if text is self.model else text.pool_type
        batch, length = tokens.shape
        if pool == "none":
            return None, torch.ones(batch, length, dtype=torch.bool, device=tokens.device)
        if pool == "argmax":
            index = tokens.argmax(dim=-1)
        elif pool == "eos":
            eos = text.text_eos_id if text is self.model else text.eos_id
            index = (tokens == eos).int().argmax(dim=-1)
        else:  # first, last
            index = torch.full((batch,), 0 if pool == "first" else length - 1, device=tokens.device)
        positions = torch.arange(length, device=tokens.device)
        output = positions == index[:, None]
        causal = getattr(text, "attn_mask", None) is not None
        return (positions <= index[:, None]) if causal else None, output
