"""Generation on open_clip models: PSE's attention probabilities, family baselines, fast paths, every method's
images next to the OpenAI path's, PNGs de-normalised with the model's own mean / std."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from d4c.data.prompts import DIGITS_PROMPTS, load_prompt_file
from d4c.generation import GenerationSettings, resolve_method, settings_for_row, synthesize
from d4c.generation.engine import generate
from d4c.generation.fastpaths import encode_images, fast_image_encoder
from d4c.generation.methods import pse
from d4c.models.family import family_of
from d4c.models.loading import LoadedModel, load_clip
from tests.numerics import assert_relative_close, relative_error
from tests.open_clip_models import micro_open_clip


def test_pse_attention_probabilities_on_batch_first_attention_match_multihead_attention():
    block = micro_open_clip("vit").visual.transformer.resblocks[0]
    assert block.attn.batch_first
    tokens = torch.randn(3, 5, 64, generator=torch.Generator().manual_seed(1))  # N x L x D
    _, weights = block.attn(tokens, tokens, tokens, need_weights=True, average_attn_weights=True)
    assert_relative_close(pse.mean_attention_probabilities(block.attn, tokens), weights, 1e-5, "mean attention")
    mixed = torch.einsum("nij,njd->nid", weights, tokens)[:, 1:]  # mean_h(A_h X), class token dropped
    reference = F.cosine_similarity(mixed[:, :, None, :], mixed[:, None, :, :], dim=-1)
    assert_relative_close(pse.patch_similarity(block.attn, tokens), reference, 1e-5, "patch similarity")


def test_pse_hooks_every_image_attention_with_the_blocks_own_inputs(open_clip_vit):
    """The loss is -sum over blocks of the entropy of each attention's batch-first input (ln_1's output) + 0.1 TV."""
    from d4c.generation.priors import TV_WEIGHT, total_variation

    model = open_clip_vit.model
    method = pse.PSE(model, GenerationSettings(method="pse", num_images=2), None, torch.device("cpu"))
    blocks = model.visual.transformer.resblocks
    assert method.hooked == [block.attn for block in blocks]
    seen = []
    handles = [block.ln_1.register_forward_hook(lambda _m, _a, out: seen.append(out)) for block in blocks]
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    method.attach()
    try:
        loss = method.loss(images, slice(0, 2), 1, torch.Generator())
    finally:
        method.detach()
        for handle in handles:
            handle.remove()
    entropies = [pse.kde_entropy(pse.patch_similarity(block.attn, x).reshape(1, 2, -1)).mean()
                 for block, x in zip(blocks, seen)]
    expected = -torch.stack(entropies).sum() + TV_WEIGHT * total_variation(images, 1)
    assert len(seen) == len(blocks) and seen[0].shape[:2] == (2, 65)  # batch-first: 2 images x (64 patches + 1)
    assert_relative_close(loss.detach(), expected.detach(), 1e-5, "PSE loss")


@pytest.mark.parametrize("method, vit, rn", [("baseline", "pse", "bns"), ("d4c", "d4c", "d4c")])
def test_family_baselines_on_open_clip_towers(open_clip_vit, open_clip_rn, method, vit, rn):
    assert resolve_method(method, open_clip_vit.model) == vit and resolve_method(method, open_clip_rn.model) == rn


def _value_and_grad(function, images):
    x = images.clone().requires_grad_(True)
    out = function(x)
    grad, = torch.autograd.grad((out * torch.randn(out.shape, generator=torch.Generator().manual_seed(9))).sum(), x)
    return out.detach(), grad


@pytest.mark.parametrize("variant", ["vit", "vit-avgpool-final-ln", "rn"])
def test_fast_paths_work_on_open_clip_towers(variant):
    model = micro_open_clip(variant)
    size = family_of(model).resolution
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3))
    reference = _value_and_grad(model.encode_image, images)
    with fast_image_encoder(model):
        assert "forward" in vars(model.visual.conv1)  # the patch matmul, or the stem's folded BatchNorm
        fast = _value_and_grad(lambda x: encode_images(model, x), images)
    assert "forward" not in vars(model.visual.conv1)
    assert_relative_close(fast[0], reference[0], 1e-5, "features")
    assert_relative_close(fast[1], reference[1], 1e-4, "pixel gradients")


ROWS_VIT = ["d4c0", "d4c1", "d4c2", "d4c3", "pse"]
ROWS_RN = ["d4c0", "d4c3", "bns"]


@pytest.mark.parametrize("name, row", [("tiny-vit", r) for r in ROWS_VIT] + [("tiny-rn", r) for r in ROWS_RN])
def test_every_method_makes_the_openai_paths_images_from_the_same_weights(name, row, request):
    """Same recipe, same weights through either family: the images differ by float rounding only."""
    ours = request.getfixturevalue("open_clip_vit" if name == "tiny-vit" else "open_clip_rn")
    openai = load_clip(name)
    settings = replace(settings_for_row(row, GenerationSettings(num_images=4, gen_iter=3, gen_batch_size=2)), seed=5)
    prompts = load_prompt_file(str(DIGITS_PROMPTS)).prompts()
    a = generate(ours.model, settings, "cpu", prompts, progress=False)
    b = generate(openai.model, settings, "cpu", prompts, progress=False)
    assert a.images.shape == b.images.shape == (4, 3, ours.resolution, ours.resolution)
    assert relative_error(a.images, b.images) < 1e-4
    assert relative_error(a.loss_history, b.loss_history) < 1e-3
    assert (a.targets is None) == (b.targets is None)


def test_pngs_use_the_models_own_normalisation(tmp_path):
    model = micro_open_clip("vit")
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    model.visual.preprocess_cfg = {"size": 32, "mean": mean, "std": std}
    loaded = LoadedModel(model, None, "micro", "random", model_type="open_clip")
    outcome = synthesize(GenerationSettings(method="gaussian", num_images=2, seed=1), loaded, "cpu",
                         img_path=tmp_path)
    m, s = np.array(mean)[:, None, None], np.array(std)[:, None, None]
    for index, x in enumerate(outcome.images.double().numpy()):
        expected = np.clip(np.round((x * s + m) * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0)
        with Image.open(tmp_path / f"{index:05d}.png") as png:
            assert np.array_equal(np.asarray(png), expected)
