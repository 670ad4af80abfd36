"""The paper's quantization loop (option): only the image encoder's activation ranges move."""

from __future__ import annotations

import torch

from d4c.data.prompts import DIGITS_PROMPTS, calibration_tokens, load_prompt_file
from d4c.generation.methods.enhancing_dfq import options_of
from d4c.generation.methods.enhancing_dfq.finetune import (activation_ranges, finetune_activation_ranges,
                                                           quantization_off)
from d4c.generation.methods.enhancing_dfq.training import build_sampler
from d4c.models.loading import load_clip
from d4c.quantization.calibration import calibrate
from d4c.quantization.qconfig import load_qconfig
from d4c.quantization.quant_clip import named_quantizers, quantize_clip

from .conftest import small_settings


def _calibrated(name: str, qconfig_path: str):
    loaded = load_clip(name, "cpu")
    images = torch.randn(8, 3, loaded.resolution, loaded.resolution, generator=torch.Generator().manual_seed(0))
    tokens = calibration_tokens(["a photo of a {c}."], load_prompt_file(str(DIGITS_PROMPTS)), 8, 0)
    quantize_clip(loaded.model, load_qconfig(qconfig_path))
    calibrate(loaded.model, images, tokens, progress=False)
    return loaded


def test_quantization_off_restores_every_flag(fast_qconfig):
    model = _calibrated("tiny-vit", fast_qconfig("config44")).model
    quantizers = [q for _, q in named_quantizers(model)]
    quantizers[0].fake_quant_enabled = False
    flags = [(q.observer_enabled, q.fake_quant_enabled) for q in quantizers]
    with quantization_off(model):
        assert not any(q.fake_quant_enabled or q.observer_enabled for q in quantizers)
    assert [(q.observer_enabled, q.fake_quant_enabled) for q in quantizers] == flags


def test_finetune_moves_only_the_image_activation_ranges(fast_qconfig, digit_prompts):
    loaded = _calibrated("tiny-vit", fast_qconfig("config44"))
    model = loaded.model
    settings = small_settings(finetune=True, finetune_iters=3, finetune_lr=1e-2)
    sampler, _ = build_sampler(len(digit_prompts), 32, options_of(settings), 0, torch.device("cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    report = finetune_activation_ranges(model, sampler, digit_prompts, options_of(settings), 4, 0, torch.device("cpu"),
                                        progress=False)
    ranges = {id(p) for p in activation_ranges(model.visual)}
    named = dict(model.named_parameters())
    moved = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert moved and all(k.startswith("visual.") and id(named.get(k)) in ranges for k in moved)
    assert report["parameters"] == len(ranges) and report["settings"]["finetune_iters"] == 3
    assert report["loss_first"] > report["kl_first"] >= 0  # + SimLoss_2
    assert [p.requires_grad for p in model.parameters()] == flags and model.visual.training is False

    off = small_settings(finetune=True, finetune_iters=2, losses=False)
    report = finetune_activation_ranges(model, sampler, digit_prompts, options_of(off), 4, 0, torch.device("cpu"),
                                        progress=False)
    assert report["loss_first"] == report["kl_first"]


def test_finetune_runs_on_a_resnet(fast_qconfig, digit_prompts):
    settings = small_settings(finetune=True, finetune_iters=2)
    loaded = _calibrated("tiny-rn", fast_qconfig("config48"))
    sampler, _ = build_sampler(len(digit_prompts), 64, options_of(settings), 0, torch.device("cpu"))
    report = finetune_activation_ranges(loaded.model, sampler, digit_prompts, options_of(settings), 4, 0,
                                        torch.device("cpu"), progress=False)
    assert report["settings"]["layers"] == [0, 1, 2, 3] and report["kl_last"] >= 0
