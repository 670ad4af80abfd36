"""Quantized open_clip models: the OpenAI towers' rules, exact features with quantizers off, every tower variant."""

from __future__ import annotations

import pytest
import torch

from d4c.errors import D4CError
from d4c.models.family import family_of
from d4c.models.open_clip_loading import zoo_model
from d4c.quantization.modules import QuantMultiheadAttention
from d4c.quantization.qconfig import load_qconfig
from d4c.quantization.quant_clip import (disable_quantization, enable_quantization, named_quantizers, quantize_clip,
                                         quantized_layers)
from tests.numerics import assert_relative_close, relative_error
from tests.open_clip_models import VARIANTS, build_from_config, micro_config, micro_open_clip

TEXTS = ["a photo of a cat.", "a handwritten digit seven, slightly blurry.", "x"]


@torch.no_grad()
def _features(model, images, tokens):
    return model.encode_image(images), model.encode_text(tokens)


def _inputs(model, n_images):
    family = family_of(model)
    images = torch.randn(n_images, 3, family.resolution, family.resolution, generator=torch.Generator().manual_seed(0))
    return images, family.tokenize(TEXTS)


def _check_equivalence(model, n_images, qconfig, switch_on=True):
    images, tokens = _inputs(model, n_images)
    reference = _features(model, images, tokens)
    quantize_clip(model, qconfig)
    assert all(not q.fake_quant_enabled and not q.observer_enabled for _, q in named_quantizers(model))
    for ours, ref, what in zip(_features(model, images, tokens), reference, ("image", "text")):
        assert_relative_close(ours, ref, 1e-5, f"{what} features, quantizers off")
    if not switch_on:
        return
    for _, q in named_quantizers(model):
        q.observer_enabled = True
    _features(model, images, tokens)
    enable_quantization(model)
    assert all(relative_error(ours, ref) > 1e-3 for ours, ref in zip(_features(model, images, tokens), reference))
    disable_quantization(model)
    for ours, ref in zip(_features(model, images, tokens), reference):
        assert_relative_close(ours, ref, 1e-5, "features after switching back off")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_supported_tower_variant_is_unchanged_with_quantizers_off(variant, fast_qconfig):
    _check_equivalence(micro_open_clip(variant), 2, load_qconfig(fast_qconfig("config44")))


def _layout(model) -> dict:
    return {name: (type(q).__name__, q.role, q.bit, q.ch_axis, getattr(q, "channels", None))
            for name, q in named_quantizers(model)}


@pytest.mark.parametrize("fixture", ["micro_vit", "micro_rn"])
def test_open_clip_towers_get_the_openai_towers_quantizers(fixture, request):
    """Same layers, same activation quantizers, same per-channel and 8-bit text-MLP exceptions."""
    openai = request.getfixturevalue(fixture)
    converted = zoo_model(openai.state_dict())
    qconfig = load_qconfig("./exp/config48.yaml")
    quantize_clip(openai, qconfig)
    quantize_clip(converted, qconfig)
    assert _layout(converted) == _layout(openai)
    assert [n for n, _ in quantized_layers(converted)] == [n for n, _ in quantized_layers(openai)]


def test_batch_first_attention_is_kept_batch_first():
    model = quantize_clip(micro_open_clip("vit"), load_qconfig("./exp/config48.yaml"))
    for tower in (family_of(model).image_tower, family_of(model).text_tower):
        attention = tower.blocks[0].attn
        assert isinstance(attention, QuantMultiheadAttention) and attention.batch_first and attention.core.batch_first


def test_unsupported_towers_are_refused_when_quantizing():
    model = build_from_config(micro_config(vision={"qk_norm": True}))
    with pytest.raises(D4CError, match="custom attention blocks"):
        quantize_clip(model, load_qconfig("./exp/config48.yaml"))


def _randomised_resnet_bn3(model):
    # open_clip zero-initialises bn3: random values make every residual branch count
    for module in model.visual.modules():
        if type(module).__name__ == "Bottleneck":
            torch.nn.init.uniform_(module.bn3.weight, 0.5, 1.0)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["ViT-B-32", "ViT-B-16", "RN50", "ViT-B-32-quickgelu"])
def test_full_size_random_open_clip_architectures_are_unchanged_with_quantizers_off(arch, fast_qconfig):
    import open_clip

    torch.manual_seed(0)
    model = _randomised_resnet_bn3(open_clip.create_model(arch, pretrained=None).float().eval())
    _check_equivalence(model, 1, load_qconfig(fast_qconfig("config44")), switch_on=False)
