"""CLIP's BPE tokenizers (``clip.tokenize``, open_clip's ``SimpleTokenizer``): the same token ids, several
times faster on plain prompts.

Both encode each text the same way: ``ftfy.fix_text``, HTML unescaping (twice), ``strip``,
whitespace collapsing and (by default) ``lower``, then the byte-level BPE of each word their
pattern finds. On ImageNet's 80,000 classifier prompts ftfy alone takes about 40 % of the time,
yet it changes nothing on a *plain* text: printable ASCII (``' '`` to ``'~'``) without ``&``.
There each of ftfy's fixers is the identity (mojibake, C1 controls, ligatures, full-width
characters, curly quotes, surrogates and NFC act on non-ASCII characters only; line breaks,
terminal escapes and control characters are not printable; HTML entities need ``&``), and so is
``html.unescape``. :class:`FastBpeTokenizer` therefore

* cleans a plain text with the library's own whitespace collapsing and ``lower`` only (clip's
  whitespace pattern compiled once: the regex module's per-call compile-cache lookup was a third
  of the time), splits it with the library's word pattern and takes each word's ids from the
  library's own BPE, memoised per word (the BPE is a pure function of the word);
* hands every other text to the library's ``encode`` unchanged;
* builds the ``[len(texts), context_length]`` tensor in one vectorised step, truncating as the
  library does (the last kept id replaced by end-of-text) or, for ``clip.tokenize(truncate=False)``,
  refusing too long texts.

:func:`clip_tokenizer` is OpenAI CLIP's; :func:`fast_tokenizer` wraps an open_clip tokenizer when it is a
plain ``SimpleTokenizer`` (``clean`` ``lower`` or ``whitespace``, no reduction mask) and returns any
other tokenizer as it is. The test suite checks the ids against the libraries' on every prompt of the
CIFAR and ImageNet classifiers and on texts that exercise each ftfy fixer.
"""

from __future__ import annotations

import functools
import importlib
from itertools import chain
from typing import Callable, Sequence

import numpy as np
import torch


def is_plain(text: str) -> bool:
    """Printable ASCII without ``&``: ftfy and ``html.unescape`` leave such a text unchanged."""
    return text.isascii() and text.isprintable() and "&" not in text


class FastBpeTokenizer:
    """A CLIP BPE tokenizer with a fast path for plain texts (same ids).

    Args:
        base: the library's tokenizer object (its ``encode``, ``bpe``, ``pat``, ``encoder``,
            ``byte_encoder``).
        clean_plain: the library's cleaning of a plain text (ftfy and unescaping left out).
        sot, eot: the start- and end-of-text ids.
        context_length: ids per row.
        truncate: cut too long texts (ending them with end-of-text) instead of raising.
    """

    def __init__(self, base, clean_plain: Callable[[str], str], sot: int, eot: int, context_length: int,
                 truncate: bool = True) -> None:
        self.base, self.clean_plain = base, clean_plain
        self.sot, self.eot = sot, eot
        self.context_length, self.truncate = context_length, truncate
        self.word_ids: dict[str, list[int]] = {}

    def _word(self, word: str) -> list[int]:
        ids = self.word_ids.get(word)
        if ids is None:
            byte_word = "".join(self.base.byte_encoder[b] for b in word.encode("utf-8"))
            ids = [self.base.encoder[piece] for piece in self.base.bpe(byte_word).split(" ")]
            self.word_ids[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """The BPE ids of ``text`` without start/end tokens: the library's ``encode``."""
        if not is_plain(text):
            return self.base.encode(text)
        ids: list[int] = []
        for word in self.base.pat.findall(self.clean_plain(text)):
            ids.extend(self._word(word))
        return ids

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        """``[len(texts), context_length]`` int64 ids, zero-padded, as the library's tokenizer makes them."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        rows, limit = [], context_length or self.context_length
        for text in texts:
            ids = [self.sot, *self.encode(text), self.eot]
            if len(ids) > limit:
                if not self.truncate:
                    raise RuntimeError(f"Input {text} is too long for context length {limit}")
                ids = ids[:limit]
                ids[-1] = self.eot
            rows.append(ids)
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        out = np.zeros((len(rows), limit), dtype=np.int64)
        # Row-major order of the mask is the order of the concatenated rows.
        out[np.arange(limit) < lengths[:, None]] = np.fromiter(chain.from_iterable(rows), dtype=np.int64,
                                                        count=int(lengths.sum()))
        return torch.from_numpy(out)


@functools.lru_cache(maxsize=8)
def clip_tokenizer(context_length: int = 77, truncate: bool = True) -> FastBpeTokenizer:
    """``clip.tokenize(texts, context_length, truncate)`` as a :class:`FastBpeTokenizer` on clip's own tokenizer
    instance; one per setting in a process (a stable object: memos may key on it)."""
    simple = importlib.import_module("clip.simple_tokenizer")
    base = importlib.import_module("clip.clip")._tokenizer
    whitespace = simple.re.compile(r"\s+")  # clip's whitespace_clean pattern, compiled once

    def clean_plain(text: str) -> str:
        return whitespace.sub(" ", text.strip()).strip().lower()

    return FastBpeTokenizer(base, clean_plain, base.encoder["<|startoftext|>"], base.encoder["<|endoftext|>"],
                            context_length, truncate)


def fast_tokenizer(tokenizer: Callable) -> Callable:
    """``tokenizer`` (an open_clip tokenizer) as a :class:`FastBpeTokenizer` when it is a plain
    ``open_clip.tokenizer.SimpleTokenizer`` (clean ``lower`` or ``whitespace``, no reduction mask), else
    ``tokenizer`` itself."""
    try:
        oc = importlib.import_module("open_clip.tokenizer")
    except ImportError:
        return tokenizer
    if type(tokenizer) is not oc.SimpleTokenizer or getattr(tokenizer, "reduction_fn", None) is not None:
        return tokenizer
    # The tokenizer keeps its cleaning function, not its name: compare with the library's own functions.
    if tokenizer.clean_fn is oc._clean_lower:
        def clean_plain(text: str) -> str:
            return oc.whitespace_clean(text.strip()).lower()
    elif tokenizer.clean_fn is oc._clean_whitespace:
        def clean_plain(text: str) -> str:
            return oc.whitespace_clean(text.strip())
    else:
        return tokenizer
    return FastBpeTokenizer(tokenizer, clean_plain, tokenizer.sot_token_id, tokenizer.eot_token_id,
                            tokenizer.context_length)
