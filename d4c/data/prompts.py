"""Prompt files (``--custom_file``): generic class names and templates for generation and calibration.

A prompt file is JSON with ``classnames`` (a non-empty list of strings) and ``templates`` (a
non-empty list of strings, each containing ``{c}``); other keys are ignored. The generation
prompts of PGSI are every template x every class name. The calibration texts (docs/method.md,
"Calibration") are the evaluation dataset's zero-shot templates x the prompt file's class names,
shuffled with the run's seed, the first ``calibrate.text`` of them.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from d4c.data.clip_tokenizer import clip_tokenizer
from d4c.errors import D4CError
from d4c.io import resolve_resource

TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "template"
GENERIC_PROMPTS = TEMPLATE_DIR / "custom_classnames_templates.json"
DIGITS_PROMPTS = TEMPLATE_DIR / "digits_classnames_templates.json"


@dataclass(frozen=True)
class PromptSet:
    """Generic class names and templates read from a prompt file."""

    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    path: str

    def prompts(self) -> list[str]:
        """Every template x every class name, template-major."""
        return [t.format(c=c) for t in self.templates for c in self.classnames]


def _string_list(doc: dict, key: str, path: Path) -> tuple[str, ...]:
    if key not in doc:
        raise D4CError(f"{path} has no '{key}' key; expected 'classnames' and 'templates' lists.", "custom_file")
    value = doc[key]
    if not isinstance(value, list) or not value:
        raise D4CError(f"{path}: '{key}' must be a non-empty list of strings.", "custom_file")
    bad = [v for v in value if not isinstance(v, str) or not v.strip()]
    if bad:
        raise D4CError(f"{path}: '{key}' holds {bad[0]!r}, expected non-empty strings only.", "custom_file")
    return tuple(value)


def load_prompt_file(path: str) -> PromptSet:
    """Read and validate a prompt file; every problem is one sentence naming the file and key."""
    resolved = resolve_resource(path)
    if not resolved.is_file():
        raise D4CError(f"{path} does not exist.", "custom_file")
    try:
        doc = json.loads(resolved.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise D4CError(f"{resolved} is not valid JSON ({exc}).", "custom_file") from None
    if not isinstance(doc, dict):
        raise D4CError(f"{resolved} must hold a JSON object with 'classnames' and 'templates'.", "custom_file")
    classnames = _string_list(doc, "classnames", resolved)
    templates = _string_list(doc, "templates", resolved)
    for template in templates:
        if "{c}" not in template:
            raise D4CError(f"{resolved}: template {template!r} has no {{c}} placeholder.", "custom_file")
        try:
            template.format(c="x")
        except (KeyError, IndexError, ValueError):
            raise D4CError(f"{resolved}: template {template!r} may only use the {{c}} placeholder.",
                           "custom_file") from None
    return PromptSet(classnames=classnames, templates=templates, path=str(resolved))


def calibration_texts(templates: list[str] | tuple[str, ...], classnames: list[str] | tuple[str, ...],
                      count: int, seed: int) -> list[str]:
    """Dataset templates x generic class names, shuffled with ``seed``, the first ``count``."""
    texts = [t.format(c=c) for t in templates for c in classnames]
    random.Random(seed).shuffle(texts)
    return texts[:count]


def calibration_tokens(templates: list[str] | tuple[str, ...], prompts: PromptSet, count: int, seed: int,
                       context_length: int = 77,
                       tokenize: Callable[[list[str]], torch.Tensor] | None = None) -> torch.Tensor:
    """The calibration texts, tokenized: ``[count, context_length]`` (fewer rows if there are fewer texts).

    ``tokenize`` is the model's tokenizer (:attr:`d4c.models.family.ClipFamily.tokenize`); by default
    OpenAI CLIP's, with ``context_length``.
    """
    texts = calibration_texts(templates, prompts.classnames, count, seed)
    if tokenize is not None:
        return tokenize(texts)
    return clip_tokenizer(context_length)(texts)
