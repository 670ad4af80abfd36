"""Reconstruction of open_clip models: units found on open_clip's structure (batch-first blocks, call-time masks),
the tokens that reach the output, and reconstruction that helps."""

from __future__ import annotations

import copy

import pytest
import torch

from d4c.models.family import family_of
from d4c.quantization.calibration import calibrate
from d4c.quantization.qconfig import load_qconfig
from d4c.quantization.quant_clip import quantize_clip, quantized_layers
from d4c.reconstruction import reconstruct
from d4c.reconstruction.units import encoder_plans
from tests.numerics import relative_error
from tests.open_clip_models import micro_open_clip

TEXTS = [f"a photo of a {c} number {i}." for i in range(16) for c in ("small", "large")]
UNITS = ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.core.out_proj", "mlp.c_fc", "mlp.c_proj")


def _calibrated(model, config_path, n_images=16):
    family = family_of(model)
    images = torch.randn(n_images, 3, family.resolution, family.resolution, generator=torch.Generator().manual_seed(0))
    tokens = family.tokenize(TEXTS)
    fp = copy.deepcopy(model)
    qconfig = load_qconfig(config_path)
    quantize_clip(model, qconfig)
    calibrate(model, images, tokens, progress=False)
    return model, fp, qconfig, images, tokens


@pytest.mark.parametrize("variant, text_prefix", [("vit", "transformer.resblocks"),
                                                  ("custom-text", "text.transformer.resblocks")])
def test_units_of_open_clip_towers_are_batch_first(variant, text_prefix, fast_qconfig):
    model = quantize_clip(micro_open_clip(variant), load_qconfig(fast_qconfig("config48")))
    visual, text = encoder_plans(model)
    assert [u.name for u in visual.units] == [f"visual.transformer.resblocks.0.{u}" for u in UNITS]
    assert [u.name for u in text.units] == [f"{text_prefix}.0.{u}" for u in UNITS]
    assert all(u.batch_axis == 0 for plan in (visual, text) for u in plan.units)
    assert all(b.batch_axis == 0 for plan in (visual, text) for b in plan.blocks)
    covered = sorted(n for plan in (visual, text) for u in plan.units for n, _ in quantized_layers(model)
                     if n == u.name or n.startswith(u.name + "."))
    assert covered == sorted(n for n, _ in quantized_layers(model))


def test_units_of_an_open_clip_resnet(fast_qconfig):
    model = quantize_clip(micro_open_clip("rn"), load_qconfig(fast_qconfig("config48")))
    names = [u.name for u in encoder_plans(model)[0].units]
    assert names == ["visual.layer1.0", "visual.layer2.0", "visual.layer3.0", "visual.layer4.0",
                     *[f"visual.attnpool.{p}" for p in ("q_proj", "k_proj", "v_proj", "core.out_proj")]]


def test_tokens_that_reach_the_output_follow_the_towers_pooling():
    tokens = family_of(micro_open_clip("vit")).tokenize(["a b", "a b c d"])[:, :8]
    valid, output = family_of(micro_open_clip("vit")).text_token_positions(tokens)  # causal, end-of-text token
    assert valid.tolist() == [[True] * 4 + [False] * 4, [True] * 6 + [False] * 2]
    assert output.tolist() == [[False] * 3 + [True] + [False] * 4, [False] * 5 + [True] + [False] * 2]
    valid, output = family_of(micro_open_clip("text-bidirectional-last")).text_token_positions(tokens)
    assert valid is None and output[:, -1].all() and output.sum() == 2  # every token reaches the last one
    images = torch.zeros(2, 3, 32, 32)
    _, output = family_of(micro_open_clip("vit")).image_token_positions(images)
    assert output.shape == (2, 5) and output[:, 0].all() and output.sum() == 2
    _, output = family_of(micro_open_clip("vit-avgpool-final-ln")).image_token_positions(images)
    assert not output[:, 0].any() and output[:, 1:].all()  # average pooling: every patch token is an output


@torch.no_grad()
def _feature_error(model, fp, images, tokens):
    return [relative_error(model.encode_image(images), fp.encode_image(images)),
            relative_error(model.encode_text(tokens), fp.encode_text(tokens))]


@pytest.mark.parametrize("variant, encoders", [("vit-layerscale", ("visual", "text")), ("rn", ("visual",))])
def test_short_reconstruction_lowers_the_error(variant, encoders, fast_qconfig):
    model, fp, qconfig, images, tokens = _calibrated(micro_open_clip(variant), fast_qconfig("config44"))
    before = _feature_error(model, fp, images, tokens)
    recon = qconfig.recon.__class__(**{**qconfig.recon.__dict__, "iters": 200, "visual_batch_size": 8,
                                       "text_batch_size": 8})
    reports = reconstruct(model, images, tokens, recon, "cpu", progress=False, encoders=encoders)
    after = _feature_error(model, fp, images, tokens)
    assert after[0] < before[0], (before, after)
    assert after[1] < before[1] if "text" in encoders else after[1] == before[1], (before, after)
    improved = [r.error_after < r.error_before for r in reports]
    assert sum(improved) >= 0.75 * len(reports), [(r.name, r.error_before, r.error_after) for r in reports]


def test_cutting_text_padding_keeps_the_losses_with_the_call_time_causal_mask(fast_qconfig, monkeypatch):
    """open_clip passes the causal mask to each block at call time: reconstruction passes it on (cut to the kept
    tokens). Without it, kept tokens would attend to the padding and the cut and full runs would differ."""
    import d4c.reconstruction.engine as engine

    config = fast_qconfig("config48", recon={"iters": 2, "text_batch_size": 4, "token_loss": "relevant"})
    model, _, qconfig, images, tokens = _calibrated(micro_open_clip("vit"), config)
    assert tokens.argmax(-1).max() + 1 < tokens.shape[1]  # there is padding to cut
    reports = {}
    for truncate in (True, False):
        monkeypatch.setattr(engine, "TRUNCATE_PADDING", truncate)
        reports[truncate] = reconstruct(copy.deepcopy(model), images, tokens, qconfig.recon, "cpu", progress=False,
                                        encoders=("text",))
    for cut, full in zip(reports[True], reports[False]):  # two steps barely move the units: near-equal losses
        assert cut.error_before == pytest.approx(full.error_before, rel=1e-3), cut.name
