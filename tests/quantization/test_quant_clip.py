"""Quantized CLIP: wrapping keeps encode_image/encode_text exact with quantizers off; what is quantized, how."""

from __future__ import annotations

import clip
import pytest
import torch
from clip.model import Bottleneck

from d4c.models.architectures import OPENAI_ARCHITECTURES
from d4c.models.loading import load_clip
from d4c.quantization.fake_quant import AdaRoundFakeQuantize, LSQFakeQuantize
from d4c.quantization.modules import QuantAttentionCore, QuantConv2d, QuantLinear
from d4c.quantization.qconfig import load_qconfig
from d4c.quantization.quant_clip import (HIDDEN_AXIS, disable_quantization, enable_quantization, named_quantizers,
                                         quantize_clip, quantized_layers)

TEXTS = ["a photo of a cat.", "a handwritten digit seven, slightly blurry."]


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@torch.no_grad()
def _features(model, images, tokens):
    return model.encode_image(images), model.encode_text(tokens)


def _check_equivalence(model, n_images, config_path, switch_on=True):
    torch.manual_seed(0)
    res = model.visual.input_resolution
    images = torch.randn(n_images, 3, res, res)
    tokens = clip.tokenize(TEXTS)
    reference = _features(model, images, tokens)
    quantize_clip(model, load_qconfig(config_path))
    assert all(not q.fake_quant_enabled and not q.observer_enabled for _, q in named_quantizers(model))
    wrapped = _features(model, images, tokens)
    for ours, ref in zip(wrapped, reference):
        assert _relative_error(ours, ref) <= 1e-5
    if not switch_on:
        return
    # every quantizer switched on (scales from a tiny min-max pass) does change the features
    for _, q in named_quantizers(model):
        q.observer_enabled = True
    _features(model, images, tokens)
    enable_quantization(model)
    quantized = _features(model, images, tokens)
    assert all(_relative_error(ours, ref) > 1e-3 for ours, ref in zip(quantized, reference))
    disable_quantization(model)
    for ours, ref in zip(_features(model, images, tokens), reference):
        assert _relative_error(ours, ref) <= 1e-5


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn"])
def test_zoo_models_are_unchanged_with_quantizers_off(name, fast_qconfig):
    _check_equivalence(load_clip(name).model, 2, fast_qconfig("config44"))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["RN50", "ViT-B/32"])
def test_full_size_random_architectures_are_unchanged_with_quantizers_off(arch, fast_qconfig):
    model = OPENAI_ARCHITECTURES[arch].build(seed=0)
    if arch == "RN50":  # CLIP zero-initialises bn3; random values make every branch count
        for module in model.visual.modules():
            if isinstance(module, Bottleneck):
                torch.nn.init.uniform_(module.bn3.weight, 0.5, 1.0)
    _check_equivalence(model, 1, fast_qconfig("config44"), switch_on=False)


def _layers(model):
    return dict(quantized_layers(model))


def test_vit_and_text_quantization_layout(micro_vit):
    model = quantize_clip(micro_vit, load_qconfig("./exp/config44.yaml"))
    layers = _layers(model)
    for prefix, text in (("visual.transformer.resblocks.0", False), ("transformer.resblocks.0", True)):
        attn = f"{prefix}.attn"
        for proj in ("q_proj", "k_proj", "v_proj"):
            layer = layers[f"{attn}.{proj}"]
            assert layer.input_quantizer.ch_axis == HIDDEN_AXIS and layer.input_quantizer.channels == layer.in_features
            assert layer.weight_quantizer.bit == 4 and layer.input_quantizer.bit == 4
        out_proj = layers[f"{attn}.core.out_proj"]
        assert out_proj.input_quantizer.ch_axis == -1 and out_proj.weight_quantizer.bit == 4
        core = model.get_submodule(f"{attn}.core")
        assert isinstance(core, QuantAttentionCore)
        assert all(q.bit == 4 and q.ch_axis == -1 for q in (core.q_quantizer, core.k_quantizer, core.v_quantizer,
                                                              core.softmax_quantizer))
        c_fc, c_proj = layers[f"{prefix}.mlp.c_fc"], layers[f"{prefix}.mlp.c_proj"]
        assert c_fc.input_quantizer.ch_axis == HIDDEN_AXIS
        assert c_proj.input_quantizer.ch_axis == (HIDDEN_AXIS if text else -1)
        mlp_bit = 8 if text else 4
        for layer in (c_fc, c_proj):
            assert layer.weight_quantizer.bit == mlp_bit and layer.input_quantizer.bit == mlp_bit
            assert isinstance(layer.weight_quantizer, AdaRoundFakeQuantize)
            assert isinstance(layer.input_quantizer, LSQFakeQuantize)
            assert layer.weight_quantizer.ch_axis == 0 and layer.weight_quantizer.channels == layer.out_features
    # six quantized Linears per block, nothing else (patch embedding, projections stay full precision)
    assert len(layers) == 6 * (len(model.visual.transformer.resblocks) + len(model.transformer.resblocks))
    assert isinstance(model.visual.conv1, torch.nn.Conv2d)


def test_resnet_quantization_layout(micro_rn):
    model = quantize_clip(micro_rn, load_qconfig("./exp/config48.yaml"))
    layers = _layers(model)
    bottlenecks = [m for m in model.visual.modules() if isinstance(m, Bottleneck)]
    for block in bottlenecks:
        assert all(isinstance(getattr(block, c), QuantConv2d) for c in ("conv1", "conv2", "conv3"))
        if block.downsample is not None:
            assert isinstance(block.downsample[1], torch.nn.Conv2d)  # the downsample branch stays FP
        assert isinstance(block.bn1, torch.nn.BatchNorm2d)
    assert isinstance(model.visual.conv1, torch.nn.Conv2d)  # the stem stays FP
    pool = model.visual.attnpool
    assert all(isinstance(getattr(pool, p), QuantLinear) for p in ("q_proj", "k_proj", "v_proj", "c_proj"))
    assert pool.q_proj.input_quantizer.ch_axis == -1
    assert pool.core.softmax_quantizer.bit == 8 and pool.c_proj.weight_quantizer.bit == 4
    assert len(layers) == 3 * len(bottlenecks) + 4 + 6 * len(model.transformer.resblocks)


def test_wrapping_twice_is_refused(micro_vit):
    qconfig = load_qconfig("./exp/config88.yaml")
    quantize_clip(micro_vit, qconfig)
    with pytest.raises(ValueError, match="already quantized"):
        quantize_clip(micro_vit, qconfig)
