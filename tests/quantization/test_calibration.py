"""Calibration: what the activation and weight observers see, and the quantizers' state afterwards."""

from __future__ import annotations

import copy

import clip
import pytest
import torch

from d4c.models.loading import load_clip
from d4c.quantization.calibration import calibrate
from d4c.quantization.qconfig import load_qconfig
from d4c.quantization.qparams import calculate_qparams
from d4c.quantization.quant_clip import named_quantizers, quantize_clip


@pytest.fixture(scope="module")
def tiny_vit():
    return load_clip("tiny-vit")


def test_activation_observers_see_the_first_32_samples_and_weights_their_values(tiny_vit, fast_qconfig):
    model = copy.deepcopy(tiny_vit.model)
    reference = copy.deepcopy(model)
    torch.manual_seed(0)
    images = torch.randn(40, 3, 32, 32)
    images[32:] *= 100  # samples past the first 32 would widen the observed ranges
    tokens = clip.tokenize([f"text number {i}" for i in range(40)])
    seen = {}
    handle = reference.visual.transformer.resblocks[0].mlp.c_proj.register_forward_pre_hook(
        lambda _m, args: seen.setdefault("c_proj_input", args[0]))
    with torch.no_grad():
        reference.encode_image(images[:32])
    handle.remove()
    quantize_clip(model, load_qconfig(fast_qconfig("config48")))
    calibrate(model, images, tokens, progress=False)
    c_proj = model.visual.transformer.resblocks[0].mlp.c_proj
    x = seen["c_proj_input"]
    scale, zp = calculate_qparams(x.min(), x.max(), 0, 255, False)
    assert c_proj.input_quantizer.scale.item() == pytest.approx(scale.item(), rel=1e-5)
    assert c_proj.input_quantizer.zero_point.item() == zp.item()
    w = c_proj.weight.detach()
    w_scale, _ = calculate_qparams(w.min(1).values, w.max(1).values, 0, 15, False)
    torch.testing.assert_close(c_proj.weight_quantizer.scale, w_scale)
    assert all(q.fake_quant_enabled and not q.observer_enabled for _, q in named_quantizers(model))
