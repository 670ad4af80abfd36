"""open_clip models (--model_type open_clip): the zoo through open_clip, tags from a cache in open_clip's layout,
checkpoint files, and the one-sentence errors (missing tags, unsupported towers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from d4c.errors import D4CError
from d4c.models.family import family_of
from d4c.models.identity import model_identity
from d4c.models.loading import load_clip
from d4c.models.open_clip_loading import architecture_config
from tests.numerics import assert_relative_close
from tests.open_clip_models import MICRO_ARCH, micro_config, micro_open_clip, register_micro_architecture

TEXTS = ["a photo of the digit seven.", "zero", "a handwritten digit, slightly blurry and tilted to the left."]


@torch.no_grad()
def _features(loaded, images):
    family = loaded.family
    return loaded.model.encode_image(images), loaded.model.encode_text(family.tokenize(TEXTS))


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn"])
def test_zoo_weights_through_open_clip_give_the_openai_features(name):
    openai, ours = load_clip(name), load_clip(name, model_type="open_clip")
    assert type(ours.model).__module__ == "open_clip.model" and ours.model_type == "open_clip"
    assert ours.source == openai.source and ours.resolution == openai.resolution
    assert torch.equal(ours.family.tokenize(TEXTS).long(), openai.family.tokenize(TEXTS).long())
    assert ours.family.mean == openai.family.mean and ours.family.std == openai.family.std
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 13, 3), dtype=np.uint8))
    assert torch.equal(ours.preprocess(picture), openai.preprocess(picture))
    images = torch.randn(3, 3, ours.resolution, ours.resolution, generator=torch.Generator().manual_seed(0))
    for got, expected, what in zip(_features(ours, images), _features(openai, images), ("image", "text")):
        assert_relative_close(got, expected, 1e-5, f"{name} {what} features")


@pytest.fixture
def micro_arch(tmp_path):
    register_micro_architecture(tmp_path, MICRO_ARCH, micro_config())
    return MICRO_ARCH


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_checkpoint_file_as_pretrained(micro_arch, tmp_path):
    original = micro_open_clip("vit", seed=3)
    path = tmp_path / "epoch_32.pt"
    torch.save({"epoch": 32, "state_dict": {f"module.{k}": v for k, v in original.state_dict().items()}}, path)
    loaded = load_clip(micro_arch, model_type="open_clip", pretrained=str(path))
    assert _same_weights(loaded.model, original) and loaded.source == str(path.resolve())
    assert not loaded.model.training


def _write_hub_cache(cache: Path, repo_id: str, filename: str, state_dict: dict) -> Path:
    """A Hugging Face hub cache entry as huggingface_hub writes it (refs/main -> snapshots/<commit>/file)."""
    from safetensors.torch import save_file

    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    target = repo / "snapshots" / commit / filename
    target.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(target))
    return target


@pytest.fixture
def micro_tags(micro_arch, monkeypatch):
    from open_clip import pretrained

    tags = {"hubtag": pretrained._pcfg(hf_hub="d4c-test/micro-vit/", mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3),
                                       interpolation="bilinear"),
            "urltag": pretrained._pcfg(url="https://example.invalid/weights/micro_urltag.pt")}
    monkeypatch.setitem(pretrained._PRETRAINED, micro_arch, tags)
    return micro_arch


def test_a_cached_hub_tag_loads_offline_with_the_tags_preprocessing(micro_tags, tmp_path):
    original = micro_open_clip("vit", seed=4)
    _write_hub_cache(tmp_path / "hub", "d4c-test/micro-vit", "open_clip_model.safetensors", original.state_dict())
    loaded = load_clip(micro_tags, model_type="open_clip", pretrained="hubtag", cache_dir=str(tmp_path / "hub"))
    assert _same_weights(loaded.model, original)
    assert loaded.family.mean == (0.5, 0.4, 0.3) and loaded.family.std == (0.2, 0.25, 0.3)
    normalize = loaded.preprocess.transforms[-1]
    assert tuple(normalize.mean) == (0.5, 0.4, 0.3) and "bilinear" in repr(loaded.preprocess.transforms[0])


def test_a_cached_url_tag_loads_offline(micro_tags, tmp_path):
    original = micro_open_clip("vit", seed=5)
    torch.save(original.state_dict(), tmp_path / "micro_urltag.pt")
    loaded = load_clip(micro_tags, model_type="open_clip", pretrained="urltag", cache_dir=str(tmp_path))
    assert _same_weights(loaded.model, original) and loaded.source == str(tmp_path / "micro_urltag.pt")


def test_a_missing_tag_offline_names_the_tag_the_file_and_the_folder(tmp_path):
    with pytest.raises(D4CError) as error:
        load_clip("ViT-B-32", model_type="open_clip", pretrained="laion2b_s34b_b79k", cache_dir=str(tmp_path))
    message = str(error.value)
    assert message.startswith("pretrained laion2b_s34b_b79k of ViT-B-32 is not cached and D4C_OFFLINE is set")
    assert "open_clip_model.safetensors" in message and "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in message
    assert str(tmp_path / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K" / "snapshots") in message
    assert message.count(". ") == 0 and message.endswith(".")


@pytest.mark.parametrize("kwargs, expected", [
    ({"name": "ViT-B-32", "pretrained": "laion9000"}, "pretrained laion9000 is neither a pretrained tag of ViT-B-32 "
                                                      "(openai, laion400m_e31"),
    ({"name": "ViT-B-32", "pretrained": None}, "pretrained is required with --model_type open_clip: a pretrained tag "
                                               "of ViT-B-32 (openai, "),
    ({"name": "ViT-Q-99", "pretrained": "x"}, "model ViT-Q-99 is not an open_clip architecture; supported ones "
                                              "include "),
    ({"name": "tiny-vit", "pretrained": "openai"}, "pretrained does not apply to --model tiny-vit"),
])
def test_bad_names_and_tags_are_one_sentence(kwargs, expected):
    with pytest.raises(D4CError) as error:
        load_clip(kwargs["name"], model_type="open_clip", pretrained=kwargs["pretrained"])
    assert str(error.value).startswith(expected), str(error.value)


def test_identities_tell_the_families_tags_and_files_apart(tmp_path):
    openai, ours = model_identity("tiny-rn"), model_identity("tiny-rn", "open_clip")
    assert ours.sha256 == openai.sha256 and ours.key() != openai.key()  # the same weights, another family
    assert ours.matches(ours.as_dict()) and not ours.matches(openai.as_dict())
    assert not openai.matches(ours.as_dict()) and not ours.matches(None, "tiny-rn")  # nor an old name-only record
    assert "model_type" not in openai.as_dict()  # OpenAI records keep their form
    tag = model_identity("ViT-B-32", "open_clip", "laion2b_s34b_b79k")
    assert tag.key() != model_identity("ViT-B-32", "open_clip", "openai").key()
    assert tag.slug() == "ViT-B-32" and tag.describe() == "ViT-B-32 (open_clip, laion2b_s34b_b79k)"
    one, other = tmp_path / "a" / "epoch_1.pt", tmp_path / "b" / "epoch_1.pt"
    for path, content in ((one, b"1"), (other, b"2")):
        path.parent.mkdir()
        path.write_bytes(content)
    first, second = (model_identity("ViT-B-32", "open_clip", str(p)) for p in (one, other))
    assert first.key() != second.key() and first.slug() == "ViT-B-32"


def test_pretrained_belongs_to_open_clip():
    with pytest.raises(D4CError, match="applies to --model_type open_clip only"):
        load_clip("tiny-vit", pretrained="openai")
    with pytest.raises(D4CError, match="model_type must be one of openai, open_clip"):
        load_clip("tiny-vit", model_type="hf")


@pytest.mark.parametrize("arch, reason", [
    ("ViT-B-16-SigLIP", "is a SigLIP model"),
    ("coca_ViT-B-32", "is a CoCa model"),
    ("EVA02-B-16", "has a timm image tower"),
    ("xlm-roberta-base-ViT-B-32", "has a Hugging Face text tower"),
])
def test_unsupported_architectures_are_refused_before_any_weights_are_read(arch, reason):
    with pytest.raises(D4CError) as error:
        load_clip(arch, model_type="open_clip", pretrained="whatever")
    message = str(error.value)
    assert message.startswith(f"model {arch} {reason}") and "which d4c cannot quantize; supported are open_clip's" \
        in message


@pytest.mark.parametrize("config, reason", [
    (micro_config(vision={"attentional_pool": True, "attn_pooler_heads": 2, "attn_pooler_queries": 4}),
     "has an attentional pooler"),
    (micro_config(vision={"qk_norm": True}), "uses open_clip's custom attention blocks"),
    (micro_config(text={"embed_cls": True}, custom_text=True), "appends a class token to its text"),
    (micro_config(init_logit_bias=-10.0), "is a SigLIP model"),
])
def test_unsupported_towers_of_a_built_model_are_refused(config, reason):
    from tests.open_clip_models import build_from_config

    model = build_from_config(config)
    with pytest.raises(D4CError) as error:
        family_of(model).check_supported("micro")
    assert str(error.value).startswith(f"model micro {reason}")


def test_supported_configs_pass_the_architecture_check():
    for arch in ("ViT-B-32", "ViT-B-16", "ViT-L-14", "RN50", "ViT-B-32-quickgelu", "ViT-H-14-quickgelu"):
        assert architecture_config(arch)["vision_cfg"]
