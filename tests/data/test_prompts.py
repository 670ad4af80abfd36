"""Prompt files: the shipped ones are valid, bad ones get one sentence naming the key."""

from __future__ import annotations

import json

import pytest

from d4c.data.digits import DIGIT_CLASSNAMES
import clip
import torch

from d4c.data.prompts import (DIGITS_PROMPTS, GENERIC_PROMPTS, calibration_texts, calibration_tokens,
                              load_prompt_file)
from d4c.errors import D4CError


def test_generic_file_has_180_concepts_in_18_groups_of_10():
    doc = json.loads(GENERIC_PROMPTS.read_text())
    prompts = load_prompt_file(str(GENERIC_PROMPTS))
    assert len(prompts.classnames) == 180 == len(set(prompts.classnames))
    assert len(doc["groups"]) == 18 and all(len(v) == 10 for v in doc["groups"].values())
    assert [c for g in doc["groups"].values() for c in g] == list(prompts.classnames)
    assert prompts.templates == ("a photo of a {c}.",)
    assert prompts.prompts()[0] == "a photo of a dog." and len(prompts.prompts()) == 180


def test_paper_default_path_resolves_from_the_repository_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default is relative to the repository root
    assert len(load_prompt_file("./d4c/template/custom_classnames_templates.json").classnames) == 180


def test_digits_file_never_names_the_digits():
    prompts = load_prompt_file(str(DIGITS_PROMPTS))
    words = {w.strip(".,") for p in prompts.prompts() for w in p.split()}
    assert not words & set(DIGIT_CLASSNAMES)


@pytest.mark.parametrize("doc, match", [
    ({"templates": ["a {c}"]}, "no 'classnames' key"),
    ({"classnames": ["cat"]}, "no 'templates' key"),
    ({"classnames": [], "templates": ["a {c}"]}, "'classnames' must be a non-empty list"),
    ({"classnames": ["cat", ""], "templates": ["a {c}"]}, "'classnames' holds ''"),
    ({"classnames": ["cat"], "templates": ["a photo of a cat"]}, "has no {c} placeholder"),
    ({"classnames": ["cat"], "templates": ["a {c} on {place}"]}, "only use the {c} placeholder"),
    (["cat"], "must hold a JSON object"),
])
def test_invalid_prompt_files(tmp_path, doc, match):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(D4CError, match=match):
        load_prompt_file(str(path))


def test_malformed_and_missing_files(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(D4CError, match="not valid JSON"):
        load_prompt_file(str(path))
    with pytest.raises(D4CError, match="does not exist"):
        load_prompt_file(str(tmp_path / "absent.json"))


def test_calibration_texts_are_a_seeded_shuffle_of_the_product():
    templates, names = ["a {c}.", "the {c}."], ["cat", "dog", "tree"]
    texts = calibration_texts(templates, names, 4, seed=0)
    assert len(texts) == 4 and set(texts) <= {t.format(c=c) for t in templates for c in names}
    assert texts == calibration_texts(templates, names, 4, seed=0)
    assert calibration_texts(templates, names, 6, seed=0) != calibration_texts(templates, names, 6, seed=1)


def test_calibration_texts_are_dataset_templates_times_custom_classnames():
    prompts = load_prompt_file("./d4c/template/custom_classnames_templates.json")
    templates = ["a photo of the digit {c}.", "the number {c}."]
    tokens = calibration_tokens(templates, prompts, 50, seed=1)
    texts = calibration_texts(templates, prompts.classnames, 50, 1)
    assert tokens.shape == (50, 77)
    assert torch.equal(tokens, clip.tokenize(texts))
    allowed = {t.format(c=c) for t in templates for c in prompts.classnames}
    assert set(texts) <= allowed and len(set(texts)) == 50
    assert texts != calibration_texts(templates, prompts.classnames, 50, 2)
