"""PSE: KDE entropy against NumPy/SciPy, attention probabilities against nn.MultiheadAttention, outputs untouched."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch
import torch.nn.functional as F

from d4c.errors import D4CError
from d4c.generation.methods import pse
from d4c.generation.settings import GenerationSettings
from tests.numerics import assert_relative_close


def _entropy_reference(values: np.ndarray) -> np.ndarray:
    """values: G x M x V -> G x M, with SciPy's normal pdf and trapezoid rule."""
    out = np.zeros(values.shape[:2])
    for g in range(values.shape[0]):
        z = np.linspace(values[g].min(), values[g].max(), 10)
        for m in range(values.shape[1]):
            density = scipy.stats.norm.pdf(z[:, None], loc=values[g, m][None, :], scale=0.01).mean(axis=1)
            out[g, m] = scipy.integrate.trapezoid(-(density + 1e-4) * np.log(density + 1e-4), z)
    return out


def test_kde_entropy_matches_scipy():
    g = torch.Generator().manual_seed(0)
    values = torch.cat([torch.rand(2, 3, 20, generator=g) * 0.2, torch.rand(2, 3, 5, generator=g) * 0.05 + 0.9], dim=2)
    ours = pse.kde_entropy(values.double())
    assert np.allclose(ours.numpy(), _entropy_reference(values.double().numpy()), rtol=1e-9, atol=1e-12)
    assert torch.allclose(pse.kde_entropy(values), ours.float(), rtol=1e-4)


def test_kde_entropy_is_differentiable_and_larger_for_spread_values():
    spread = torch.linspace(-0.5, 0.5, 50).repeat(1, 1, 1).requires_grad_(True)
    peaked = torch.cat([torch.zeros(1, 1, 49), torch.ones(1, 1, 1)], dim=2) * 0.5 - 0.25
    both = pse.kde_entropy(torch.cat([spread.detach(), peaked], dim=1))
    assert both[0, 0] > both[0, 1]
    pse.kde_entropy(spread).sum().backward()
    assert spread.grad.abs().sum() > 0


def test_mean_attention_probabilities_match_multihead_attention(micro_vit):
    block = micro_vit.visual.transformer.resblocks[0]
    tokens = torch.randn(5, 3, 64, generator=torch.Generator().manual_seed(1))  # L x N x D
    _, weights = block.attn(tokens, tokens, tokens, need_weights=True, average_attn_weights=True)
    assert_relative_close(pse.mean_attention_probabilities(block.attn, tokens), weights, 1e-5, "mean attention")


def test_patch_similarity_is_the_cosine_matrix_of_mixed_patch_tokens(micro_vit):
    block = micro_vit.visual.transformer.resblocks[0]
    tokens = torch.randn(5, 2, 64, generator=torch.Generator().manual_seed(2))
    _, weights = block.attn(tokens, tokens, tokens, need_weights=True)
    mixed = torch.einsum("nij,jnd->nid", weights, tokens)[:, 1:]  # mean_h(A_h X), class token dropped
    reference = F.cosine_similarity(mixed[:, :, None, :], mixed[:, None, :, :], dim=-1)  # broadcast, test only
    assert_relative_close(pse.patch_similarity(block.attn, tokens), reference, 1e-5, "patch similarity")


def _reference_pse_loss(model, images):
    """-sum_layers H + 0.1 TV with attention weights from nn.MultiheadAttention itself."""
    inputs = []
    hooks = [b.attn.register_forward_pre_hook(lambda m, a: inputs.append((m, a[0]))) for b in model.visual.transformer.resblocks]
    with torch.no_grad():
        model.encode_image(images)
    for h in hooks:
        h.remove()
    entropy = 0.0
    for attention, tokens in inputs:
        with torch.no_grad():
            _, weights = attention(tokens, tokens, tokens, need_weights=True)
        mixed = torch.einsum("nij,jnd->nid", weights, tokens)[:, 1:]
        sim = F.cosine_similarity(mixed[:, :, None, :], mixed[:, None, :, :], dim=-1)
        entropy += _entropy_reference(sim.reshape(1, len(images), -1).double().numpy()).mean()
    x = images.double().numpy()
    c, h, w = x.shape[1:]
    tv = np.mean(((x[..., 1:] - x[..., :-1]) ** 2).sum((1, 2, 3)) / (c * h * (w - 1))
                 + ((x[..., 1:, :] - x[..., :-1, :]) ** 2).sum((1, 2, 3)) / (c * (h - 1) * w))
    return -entropy + 0.1 * tv


def test_pse_loss_equals_the_reference_and_leaves_outputs_unchanged(micro_vit):
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = micro_vit.encode_image(images)
    method = pse.PSE(micro_vit, GenerationSettings(method="pse"), None, torch.device("cpu"))
    method.attach()
    loss = method.loss(images, slice(0, 3), 1, torch.Generator())
    with torch.no_grad():
        hooked = micro_vit.encode_image(images)
    method.detach()
    assert torch.equal(hooked, before)
    assert np.isclose(loss.item(), _reference_pse_loss(micro_vit, images), rtol=1e-4)


def test_grouped_pse_loss_is_the_sum_over_minibatches(micro_vit):
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    method = pse.PSE(micro_vit, GenerationSettings(method="pse"), None, torch.device("cpu"))
    method.attach()
    grouped = method.loss(images, slice(0, 4), 2, torch.Generator())
    separate = method.loss(images[:2], slice(0, 2), 1, torch.Generator()) + method.loss(images[2:], slice(2, 4), 1, torch.Generator())
    method.detach()
    assert torch.isclose(grouped, separate, rtol=1e-5)


def test_pse_on_a_resnet_is_a_clear_error(micro_rn):
    with pytest.raises(D4CError, match=r"^method pse \(PSE\) needs a ViT image encoder"):
        pse.PSE(micro_rn, GenerationSettings(method="pse"), None, torch.device("cpu"))
