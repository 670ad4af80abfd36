"""The figures of open_clip runs: ``--model_type open_clip`` loads the runs' family, the cache must match it."""

from __future__ import annotations

import json

import pytest
import torch

from d4c.data.prompts import DIGITS_PROMPTS
from d4c.figures.cli import main
from d4c.generation.cache import PseudoImageCache
from d4c.generation.rows import settings_for_row
from d4c.generation.synthesis import synthesize
from d4c.models.loading import load_clip
from tests.figures.conftest import SETTINGS, _threads
from tests.figures.helpers import make_state


@pytest.fixture(scope="module")
def open_clip_vit():
    return load_clip("tiny-vit", "cpu", model_type="open_clip")


@pytest.fixture(scope="module")
def open_clip_cache(tmp_path_factory, open_clip_vit, prompts):
    folder = tmp_path_factory.mktemp("open_clip_cache")
    with _threads(1):
        outcome = synthesize(settings_for_row("d4c0", SETTINGS), open_clip_vit, "cpu", prompts,
                             cache=PseudoImageCache(folder), progress=False)
    return folder, outcome


def test_images_of_an_open_clip_run_use_its_family_and_tokenizer(open_clip_cache, open_clip_vit, prompts, tmp_path):
    folder, outcome = open_clip_cache
    out = tmp_path / "images.png"
    assert main(["images", "--cache", str(folder), "--model", "tiny-vit", "--model_type", "open_clip",
                 "--custom_file", str(DIGITS_PROMPTS), "--per_method", "2", "--no_gaussian", "-o", str(out)]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    model = open_clip_vit.model
    with torch.no_grad():  # independent: open_clip's own tokenizer and encoders
        texts = torch.nn.functional.normalize(model.encode_text(open_clip_vit.family.tokenize(prompts)), dim=-1)
        feats = torch.nn.functional.normalize(model.encode_image(outcome.images), dim=-1)
    probs = (model.logit_scale.exp() * feats @ texts.t()).softmax(dim=1)
    (method,) = data["methods"]
    assert method["method"] == "d4c0"
    for shown in method["shown"]:
        assert shown["top_prompt"] == prompts[int(probs[shown["index"]].argmax())]


def test_an_open_clip_cache_is_not_taken_for_the_openai_model(open_clip_cache, tmp_path, capsys):
    folder, _ = open_clip_cache
    assert main(["images", "--cache", str(folder), "--model", "tiny-vit", "--custom_file", str(DIGITS_PROMPTS),
                 "-o", str(tmp_path / "images.png")]) == 2
    assert "was generated from other weights than --model tiny-vit" in capsys.readouterr().err


def test_layers_of_an_open_clip_model_tokenise_with_its_tokenizer(open_clip_vit, tmp_path):
    with _threads(1):
        state = make_state(open_clip_vit, tmp_path, "88", "gaussian")
    out = tmp_path / "layers.png"
    assert main(["layers", "--model", "tiny-vit", "--model_type", "open_clip", "--states", str(state),
                 "--dataset", "digits", "--num_images", "4", "--num_texts", "4", "-o", str(out)]) == 0
    (got,) = json.loads(out.with_suffix(".json").read_text())["states"]
    assert got["text"]["mean_sqnr_db"] > 10 and got["image"]["mean_sqnr_db"] > 10
