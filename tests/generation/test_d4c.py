"""D4C: PGSI targets and logits, SCG logits (K + mini-batch columns, one encoder forward), PAE placement, learning."""

from __future__ import annotations

import clip
import pytest
import torch
import torch.nn.functional as F

from d4c.data.prompts import DIGITS_PROMPTS, load_prompt_file
from d4c.errors import D4CError
from d4c.generation import pae, scg
from d4c.generation.engine import generate
from d4c.generation.methods.d4c import D4C
from d4c.generation.rows import settings_for_row
from d4c.generation.settings import GenerationSettings
from tests.numerics import assert_relative_close

PROMPTS = ["a photo of a dog.", "a photo of a car.", "a photo of a tree.", "a photo of a cup.", "a photo of a hat."]


def _method(model, config, num_images=8, resolution=32, seed=0):
    method = D4C(model, settings_for_row(f"d4c{config}"), PROMPTS, torch.device("cpu"))
    method.setup(num_images, resolution, torch.Generator().manual_seed(seed))
    return method


def _features(model, images):
    return F.normalize(model.encode_image(images), dim=-1)


def test_text_targets_are_normalised_prompt_features_and_targets_are_fixed_uniform(micro_vit):
    method = _method(micro_vit, 0, num_images=4000)
    with torch.no_grad():
        expected = F.normalize(micro_vit.encode_text(clip.tokenize(PROMPTS)), dim=-1)
    assert_relative_close(method.text_targets, expected, 1e-6, "text targets")
    counts = torch.bincount(method.targets, minlength=len(PROMPTS)).float()
    assert method.targets.min() >= 0 and method.targets.max() < len(PROMPTS)
    assert (counts / 4000 - 0.2).abs().max() < 0.03
    before = method.targets.clone()
    method.loss(torch.randn(4, 3, 32, 32), slice(0, 4), 1, torch.Generator())
    assert torch.equal(method.targets, before)


def test_pgsi_logits_are_cosine_similarities_over_tau(micro_vit):
    method = _method(micro_vit, 0)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = method.logits(x, slice(0, 4), 1, torch.Generator())
        expected = _features(micro_vit, x) @ method.text_targets.t() / 0.1
    assert logits.shape == (4, len(PROMPTS))
    assert_relative_close(logits, expected, 1e-5, "logits")


def test_pgsi_with_pae_perturbs_the_whole_image(micro_vit):
    method = _method(micro_vit, 2)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = method.logits(x, slice(0, 4), 1, torch.Generator().manual_seed(9))
        views = pae.perturb(x, torch.Generator().manual_seed(9))
        expected = _features(micro_vit, views) @ method.text_targets.t() / 0.1
    assert_relative_close(logits, expected, 1e-5, "logits")


@pytest.mark.parametrize("config", [1, 3])
def test_scg_logits_have_k_plus_minibatch_columns_and_match_a_per_image_reference(micro_vit, config):
    method = _method(micro_vit, config)
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    index = slice(4, 8)
    with torch.no_grad():
        logits = method.logits(x[index], index, 1, torch.Generator().manual_seed(3))
        # reference: per-image crops with F.interpolate, separate encoder calls
        boxes = method.boxes[index]
        fg = torch.cat([F.interpolate(x[4 + i:5 + i, :, t:t + h, l:l + w], size=(32, 32), mode="bilinear",
                                      align_corners=False) for i, (t, l, h, w) in enumerate(boxes.tolist())])
        g = torch.Generator().manual_seed(3)
        if config == 3:
            fg = pae.perturb(fg, g)  # PAE on the foreground only, drawn before the background noise
        bg = x[index] * (1 - scg.box_masks(boxes, 32, 32)) + 0.1 * torch.randn(4, 3, 32, 32, generator=g)
        f_fg, f_bg = _features(micro_vit, fg), _features(micro_vit, bg)
        expected = torch.cat([f_fg @ method.text_targets.t(), f_fg @ f_bg.t()], dim=1) / 0.1
    assert logits.shape == (4, len(PROMPTS) + 4)
    assert_relative_close(logits, expected, 1e-5, "logits")


def test_scg_negatives_stay_within_each_minibatch_when_grouped(micro_vit):
    method = _method(micro_vit, 1)
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        grouped = method.logits(x, slice(0, 8), 2, torch.Generator().manual_seed(5))
        g = torch.Generator().manual_seed(5)
        fg = scg.crop_resize(x, method.boxes)
        bg = scg.background_views(x, scg.box_masks(method.boxes, 32, 32), g)
        f_fg, f_bg = _features(micro_vit, fg), _features(micro_vit, bg)
    assert grouped.shape == (8, len(PROMPTS) + 4)
    K = len(PROMPTS)
    assert_relative_close(grouped[:4, K:], f_fg[:4] @ f_bg[:4].t() / 0.1, 1e-5, "first mini-batch")
    assert_relative_close(grouped[4:, K:], f_fg[4:] @ f_bg[4:].t() / 0.1, 1e-5, "second mini-batch")


def test_scg_encodes_foregrounds_and_backgrounds_in_one_forward_and_grads_reach_both(micro_vit):
    method = _method(micro_vit, 1, num_images=4)
    sizes = []
    hook = micro_vit.visual.register_forward_pre_hook(lambda m, a: sizes.append(a[0].shape[0]))
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(6), requires_grad=True)
    logits = method.logits(x, slice(0, 4), 1, torch.Generator())
    hook.remove()
    assert sizes == [8]  # fg and bg of the mini-batch, the whole image never
    F.cross_entropy(logits, method.targets).backward()
    inside = scg.box_masks(method.boxes, 32, 32).expand_as(x).bool()
    assert x.grad[inside].abs().sum() > 0 and x.grad[~inside].abs().sum() > 0


def test_d4c_without_prompts_is_a_clear_error(micro_vit):
    with pytest.raises(D4CError, match="^prompts holds no generation prompts"):
        D4C(micro_vit, GenerationSettings(method="d4c"), [], torch.device("cpu"))


def test_pgsi_loss_decreases_over_20_iterations_on_tiny_vit(tiny_vit):
    prompts = load_prompt_file(str(DIGITS_PROMPTS)).prompts()
    settings = settings_for_row("d4c0", GenerationSettings(num_images=8, gen_batch_size=4, gen_iter=20, gen_lr=0.05))
    result = generate(tiny_vit.model, settings, "cpu", prompts, progress=False)
    history = result.loss_history
    assert len(history) == 20 and torch.isfinite(history).all()
    assert history[-5:].mean() < 0.8 * history[:5].mean()
    # the images now match their targets better than the initial noise did
    method = D4C(tiny_vit.model, settings, prompts, torch.device("cpu"))
    with torch.no_grad():
        final = F.cross_entropy(method.logits(result.images, slice(0, 8), 1, torch.Generator()), result.targets)
    assert final < history[0]
