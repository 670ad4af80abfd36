"""d4c.data.clip_tokenizer: the ids of ``clip.tokenize``, checked against it (the independent computation)."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import clip
import pytest
import torch

import d4c

from d4c.data.clip_tokenizer import clip_tokenizer, fast_tokenizer, is_plain
from d4c.data.prompts import calibration_texts, calibration_tokens

TEMPLATES = Path(d4c.__file__).parent / "template"


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _classifier_prompts(dataset: str) -> list[str]:
    """clip_benchmark's templates of ``dataset`` filled with its class names (ImageNet's from clip_benchmark;
    CIFAR's come from the dataset files: CIFAR-10's names and d4c's 180 generic concepts stand in)."""
    from clip_benchmark.datasets import builder

    folder = Path(builder.__file__).parent
    templates = json.loads((folder / "en_zeroshot_classification_templates.json").read_text())[dataset]
    if dataset == "imagenet1k":
        classes = json.loads((folder / "en_classnames.json").read_text())[dataset]
    else:
        classes = CIFAR10_CLASSES + json.loads((TEMPLATES / "custom_classnames_templates.json").read_text())["classnames"]
    return [t.format(c=name) for name in classes for t in templates]


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "imagenet1k"])
def test_classifier_prompts_match_clip(dataset):
    texts = _classifier_prompts(dataset)
    assert torch.equal(clip_tokenizer()(texts), clip.tokenize(texts, truncate=True))


@pytest.mark.parametrize("name", ["custom_classnames_templates.json", "digits_classnames_templates.json"])
def test_packaged_prompt_files_match_clip(name):
    data = json.loads((TEMPLATES / name).read_text())
    texts = [t.format(c=c) for t in data["templates"] for c in data["classnames"]]
    assert torch.equal(clip_tokenizer()(texts), clip.tokenize(texts, truncate=True))


# Texts each of ftfy's fixers or html.unescape changes, and texts around the plain/other boundary.
NOT_PLAIN = [
    "caf\u00c3\u00a9 au lait",  # mojibake
    "AT&amp;T and &lt;b&gt;",  # HTML entities (unescaped twice by clip)
    "&amp;amp; twice",
    "\ufb01ne \ufb02ower",  # ligatures
    "\uff2c\uff2f\uff35\uff24 noise",  # full width
    "\u201cquoted\u201d \u2018single\u2019",  # curly quotes
    "line\r\nbreak\rhere\u2028too",
    "tab\tseparated\vand\fform",
    "terminal \x1b[36mcolour\x1b[0m",
    "control\x00\x07chars\x7f",
    "c1 \x85 \x9d controls",
    "decomposed e\u0301 accent",
    "\u4e00\u4e8c\u4e09 \u00e9t\u00e9 na\u00efve",
    "multi\nline\ntext",
]
PLAIN = [
    "",
    "   ",
    "a photo of a dog.",
    "  leading and trailing  ",
    "don't we'll they're I'm it's you'd I've",
    "UPPER lower MiXeD 123 4.5 #tag @user <tag> {braces} [x] ~!$%^*()_+-=|\\/?,.;:'\"`",
    "jack-o'-lantern, a.k.a. 'pumpkin'.",
]


@pytest.mark.parametrize("text", NOT_PLAIN + PLAIN)
def test_every_text_matches_clip(text):
    assert is_plain(text) == (text in PLAIN)
    assert torch.equal(clip_tokenizer()([text]), clip.tokenize([text], truncate=True))


def test_random_printable_ascii_matches_clip():
    rng = random.Random(0)
    alphabet = string.printable  # includes &, tabs and line breaks: both paths
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(2000)]
    assert any(is_plain(t) for t in texts) and any(not is_plain(t) for t in texts)
    assert torch.equal(clip_tokenizer()(texts), clip.tokenize(texts, truncate=True))


def test_truncation_and_context_length_match_clip():
    long = " ".join(f"word{i}" for i in range(200))
    for length in (77, 16, 5):
        ours = clip_tokenizer(length)([long, "short text"])
        assert torch.equal(ours, clip.tokenize([long, "short text"], context_length=length, truncate=True))
        assert int(ours[0, -1]) == clip_tokenizer().eot


def test_too_long_is_refused_without_truncate():
    with pytest.raises(RuntimeError, match="too long for context length 8"):
        clip_tokenizer(8, truncate=False)(["one two three four five six seven eight nine"])
    assert clip_tokenizer(8, truncate=False)(["one two"]).shape == (1, 8)


def test_single_string_and_empty_list():
    assert torch.equal(clip_tokenizer()("a dog"), clip.tokenize("a dog"))
    assert clip_tokenizer()([]).shape == (0, 77)


def test_one_tokenizer_per_setting_and_used_by_the_stages():
    assert clip_tokenizer(77) is clip_tokenizer(77) and clip_tokenizer(16) is not clip_tokenizer(77)
    templates = ["a photo of a {c}.", "itap of my {c}"]
    texts = calibration_texts(templates, _PromptsStub.classnames, 6, 0)
    tokens = calibration_tokens(templates, _PromptsStub(), count=6, seed=0)
    assert torch.equal(tokens, clip.tokenize(texts, truncate=True))


class _PromptsStub:
    classnames = ["dog", "cat", "jack-o'-lantern", "caf\u00e9"]


# open_clip's SimpleTokenizer: the same fast path where its cleaning allows it, the library's own ids.

def _open_clip_texts() -> list[str]:
    rng = random.Random(1)
    noise = ["".join(rng.choice(string.printable) for _ in range(rng.randint(0, 60))) for _ in range(500)]
    return _classifier_prompts("imagenet1k")[::20] + NOT_PLAIN + PLAIN + noise + [" ".join(["word"] * 100)]


@pytest.mark.parametrize("clean", ["lower", "whitespace"])
def test_open_clip_simple_tokenizer_ids_match(clean):
    from open_clip.tokenizer import SimpleTokenizer

    original = SimpleTokenizer(context_length=77, clean=clean)
    fast = fast_tokenizer(original)
    assert fast is not original
    texts = _open_clip_texts()
    assert torch.equal(fast(texts), original(texts))
    assert torch.equal(fast(texts[:50], context_length=20), original(texts[:50], context_length=20))


def test_other_open_clip_tokenizers_are_kept_as_they_are():
    from open_clip.tokenizer import SimpleTokenizer

    for kept in (SimpleTokenizer(clean="canonicalize"), SimpleTokenizer(reduction_mask="simple"),
                 clip.tokenize):
        assert fast_tokenizer(kept) is kept


def test_the_open_clip_family_tokenizes_with_the_fast_tokenizer_and_open_clips_ids():
    import open_clip

    from d4c.models.loading import load_clip

    loaded = load_clip("tiny-vit", model_type="open_clip")
    texts = _open_clip_texts()
    ours = loaded.family.tokenizer
    assert type(ours).__name__ == "FastBpeTokenizer"
    assert torch.equal(loaded.family.tokenize(texts), open_clip.tokenize(texts, context_length=77))
