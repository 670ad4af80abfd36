"""Calibration data (real images, Gaussian noise, texts) and what the observers see."""

from __future__ import annotations

import copy

import clip
import pytest
import torch

from d4c.config import RunConfig
from d4c.data.datasets import build_dataset
from d4c.data.prompts import calibration_texts, load_prompt_file
from d4c.models.loading import load_clip
from d4c.quantization.calibration import calibrate, calibration_images, calibration_tokens
from d4c.quantization.qconfig import load_qconfig
from d4c.quantization.qparams import calculate_qparams
from d4c.quantization.quant_clip import named_quantizers, quantize_clip


@pytest.fixture(scope="module")
def tiny_vit():
    return load_clip("tiny-vit")


def test_real_calibration_images_are_distinct_training_images(tiny_vit):
    config = RunConfig(dataset="digits", num_workers=0, seed=3)
    images = calibration_images(config, tiny_vit, 20, "cpu")
    assert images.shape == (20, 3, 32, 32)
    train = build_dataset("digits", None, "train", tiny_vit.preprocess)
    pool = torch.stack([train[i][0] for i in range(len(train))]).flatten(1)
    matches = [torch.nonzero((pool == img.flatten()).all(1)).flatten().tolist() for img in images]
    assert all(m for m in matches)
    assert len({m[0] for m in matches}) == 20
    again = calibration_images(config, tiny_vit, 20, "cpu")
    torch.testing.assert_close(images, again)
    other = calibration_images(RunConfig(dataset="digits", num_workers=0, seed=4), tiny_vit, 20, "cpu")
    assert not torch.equal(images, other)


def test_gaussian_noise_images_are_seeded_standard_normal(tiny_vit):
    config = RunConfig(dataset="digits", dfq=True, seed=5)
    images = calibration_images(config, tiny_vit, 256, "cpu")
    assert images.shape == (256, 3, 32, 32)
    assert abs(images.mean().item()) < 0.02 and abs(images.std().item() - 1) < 0.02
    torch.testing.assert_close(images, calibration_images(config, tiny_vit, 256, "cpu"))


def test_pseudo_images_come_from_the_generation_stage(tiny_vit, tmp_path):
    from d4c.generation import synthesize_for_run

    config = RunConfig(dataset="digits", dfq=True, gen_img=True, gen_iter=2, gen_batch_size=2, seed=5,
                       custom_file="./d4c/template/digits_classnames_templates.json", gen_cache_dir="none")
    images = calibration_images(config, tiny_vit, 4, "cpu")
    assert images.shape == (4, 3, 32, 32) and torch.isfinite(images).all()
    noise = calibration_images(RunConfig(dataset="digits", dfq=True, seed=5), tiny_vit, 4, "cpu")
    assert not torch.allclose(images, noise)  # optimised, not the Gaussian starting point
    torch.testing.assert_close(images, synthesize_for_run(config, tiny_vit, 4, "cpu"))


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
