"""The zero-shot classifier of a dataset, computed fast: the same weights as clip_benchmark's.

``clip_benchmark.metrics.zeroshot_classification.zero_shot_classifier`` encodes, class by class,
every template filled with the class name, normalises each embedding, averages them, and
normalises the mean; the classifier is ``[embed_dim, classes]``. With ImageNet's 1000 classes x 80
templates that is 1000 encoder calls of 80 prompts, each padded to the 77-token context.
:func:`zeroshot_classifier` computes the same weights with

* the prompts tokenised once per (templates, classes, context length) in a process and reused;
* prompts of all classes batched together (``batch_size`` at a time: memory stays bounded), in
  order of their length;
* each batch cut after its longest prompt's end-of-text token: CLIP's text encoder is causal
  (each token attends to earlier ones only) and reads the features at the end-of-text token, so
  the tokens after it never reach the output. Exact for the quantized encoders too: with their
  scales fixed, the quantizers act on each element alone. open_clip text towers are cut the same
  way where their family adapter says the tower is causal and where its pooled token lies
  (:meth:`d4c.models.open_clip_family.OpenClipFamily.text_token_positions`: ``argmax``, ``eos``,
  ``first`` pooling; a tower with CoCa's appended class token, a non-causal one or any other
  model is encoded whole).

Only the order of floating-point operations differs from clip_benchmark's loop (tested: relative
error ~1e-6).
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from clip.model import CLIP

from d4c.data.clip_tokenizer import clip_tokenizer
from d4c.models.family import family_of, model_type_of

PROMPT_BATCH = 512
"""Prompts per text-encoder call."""
_TOKEN_MEMO: dict[tuple[str, int | None], tuple[torch.Tensor, torch.Tensor]] = {}
_TOKENIZERS: dict[int, Callable] = {}
"""The tokenizers of the memo's keys, kept alive so that their ids are never reused."""


def prompt_tokens(classnames: Sequence[str], templates: Sequence[str] | dict, context_length: int = 77,
                  tokenize: Callable[[list[str]], torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens [P, context_length], class index [P])`` of every prompt, class by class as clip_benchmark
    orders them; computed once per process for the same classes, templates and tokenizer.

    ``tokenize`` is the model's tokenizer (a stable object, :attr:`d4c.models.family.ClipFamily.tokenizer`);
    by default OpenAI CLIP's with ``context_length``.
    """
    texts_key = hashlib.sha256(json.dumps([list(classnames), templates if isinstance(templates, dict)
                                           else list(templates), context_length]).encode()).hexdigest()
    key = (texts_key, None if tokenize is None else id(tokenize))
    if key not in _TOKEN_MEMO:
        texts, owner = [], []
        for index, name in enumerate(classnames):
            filled = templates[name] if isinstance(templates, dict) else [t.format(c=name) for t in templates]
            texts.extend(filled)
            owner.extend([index] * len(filled))
        if tokenize is None:
            tokens = clip_tokenizer(context_length)(texts)
        else:
            tokens = tokenize(texts)
            _TOKENIZERS[id(tokenize)] = tokenize
        _TOKEN_MEMO[key] = tokens, torch.tensor(owner)
    return _TOKEN_MEMO[key]


@contextmanager
def _causal_masks(model: CLIP, length: int) -> Iterator[None]:
    """The text blocks' causal masks cut to ``length`` tokens for the block."""
    blocks = list(model.transformer.resblocks)
    saved = [block.attn_mask for block in blocks]
    try:
        for block, mask in zip(blocks, saved):
            block.attn_mask = None if mask is None else mask[:length, :length]
        yield
    finally:
        for block, mask in zip(blocks, saved):
            block.attn_mask = mask


def _clip_text_encoder(model: torch.nn.Module) -> bool:
    return isinstance(model, CLIP) and all(hasattr(b, "attn_mask") for b in model.transformer.resblocks)


@contextmanager
def _cut_to(text: torch.nn.Module, length: int) -> Iterator[None]:
    """An open_clip text tower's positional embedding and causal mask cut to ``length`` tokens for the block
    (replaced in the module's parameter and buffer tables, then restored: its state never changes for good)."""
    cuts = {"positional_embedding": lambda v: v[:length], "attn_mask": lambda v: v[:length, :length]}
    saved = []
    try:
        for name, cut in cuts.items():
            store = next((d for d in (text._parameters, text._buffers) if d.get(name) is not None), None)
            if store is not None:
                saved.append((store, name, store[name]))
                store[name] = cut(store[name]).detach()
        yield
    finally:
        for store, name, value in saved:
            store[name] = value


def _encode_open_clip_cut(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip's ``encode_text`` on the tokens up to the batch's last pooled position, where that is exact."""
    family = family_of(model)
    text = family.text_module
    valid, output = family.text_token_positions(tokens)
    if valid is None or getattr(text, "cls_emb", None) is not None or not isinstance(
            getattr(text, "positional_embedding", None), torch.Tensor):
        return model.encode_text(tokens)
    length = int(output.nonzero()[:, 1].max()) + 1
    if length >= tokens.shape[1]:
        return model.encode_text(tokens)
    with _cut_to(text, length):
        return model.encode_text(tokens[:, :length])


def encode_text_cut(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)``, computed on the tokens up to the batch's last end-of-text token."""
    if model_type_of(model) == "open_clip":
        return _encode_open_clip_cut(model, tokens)
    if not _clip_text_encoder(model):
        return model.encode_text(tokens)
    eot = tokens.argmax(dim=-1)
    length = int(eot.max()) + 1
    x = model.token_embedding(tokens[:, :length]).type(model.dtype)
    x = x + model.positional_embedding[:length].type(model.dtype)
    with _causal_masks(model, length):
        x = model.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
    x = model.ln_final(x).type(model.dtype)
    return x[torch.arange(x.shape[0], device=x.device), eot] @ model.text_projection


@torch.no_grad()
def zeroshot_classifier(model: torch.nn.Module, classnames: Sequence[str], templates: Sequence[str] | dict,
                        device: torch.device | str, amp: bool = False, context_length: int = 77,
                        batch_size: int = PROMPT_BATCH,
                        tokenize: Callable[[list[str]], torch.Tensor] | None = None) -> torch.Tensor:
    """``[embed_dim, classes]``: clip_benchmark's zero-shot classifier (see the module docstring)."""
    device = torch.device(device)
    tokens, owner = prompt_tokens(classnames, templates, context_length, tokenize)
    order = torch.argsort(tokens.argmax(dim=-1), stable=True)  # similar lengths share a batch
    sums = None
    with torch.autocast(device.type, enabled=amp):
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            features = F.normalize(encode_text_cut(model, tokens[index].to(device)), dim=-1).float()
            if sums is None:
                sums = torch.zeros(len(classnames), features.shape[1], device=device)
            sums.index_add_(0, owner[index].to(device), features)
    counts = torch.bincount(owner, minlength=len(classnames)).to(device).clamp(min=1)
    means = sums / counts[:, None]
    return F.normalize(means, dim=-1).t().contiguous()
