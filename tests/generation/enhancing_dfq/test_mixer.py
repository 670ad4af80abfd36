"""The features mixer (eq. 6) against a per-image, per-head computation; the mixing weights."""

from __future__ import annotations

import math

import pytest
import torch

from d4c.generation.methods.enhancing_dfq.mixer import FeaturesMixer, draw_mixing_weights


def _by_hand(mixer: FeaturesMixer, embeddings: torch.Tensor, weights: torch.Tensor):
    """Eq. 6 image by image and head by head, with explicit sums."""
    k, d = embeddings.shape
    dh = d // mixer.heads
    wq, wk, wv = mixer.query.weight, mixer.key.weight, mixer.value.weight
    outputs, targets = [], []
    for lam in weights:
        query = wq @ sum(lam[i] * embeddings[i] for i in range(k))
        keys = [wk @ e for e in embeddings]
        values = [wv @ e for e in embeddings]
        out, target = torch.zeros(d), torch.zeros(k)
        for h in range(mixer.heads):
            part = slice(h * dh, (h + 1) * dh)
            scores = torch.tensor([float(query[part] @ key[part]) / math.sqrt(dh) for key in keys])
            sigma = torch.exp(scores - scores.max())
            sigma = sigma / sigma.sum()
            out[part] = sum(sigma[i] * values[i][part] for i in range(k))
            target += sigma / mixer.heads
        outputs.append(out)
        targets.append(target)
    return torch.stack(outputs), torch.stack(targets)


@pytest.mark.parametrize("heads", [1, 2])
def test_attention_and_mixed_targets_match_eq6(heads):
    torch.manual_seed(0)
    mixer = FeaturesMixer(8, heads)
    with torch.no_grad():
        for projection in (mixer.query, mixer.key, mixer.value):
            projection.weight.normal_()
    embeddings = torch.randn(5, 8)
    weights = draw_mixing_weights(torch.tensor([0, 3, 4, 1]), 5, 0.5, torch.Generator().manual_seed(1))
    mixed, targets = mixer(embeddings, weights)
    with torch.no_grad():
        ref_mixed, ref_targets = _by_hand(mixer, embeddings, weights)
    assert torch.allclose(mixed, ref_mixed, rtol=1e-4, atol=1e-5)
    assert torch.allclose(targets, ref_targets, rtol=1e-4, atol=1e-6)
    assert torch.allclose(targets.sum(dim=1), torch.ones(4))


def test_identity_start_attends_to_the_query_class_and_the_target_is_a_label():
    torch.manual_seed(0)
    mixer = FeaturesMixer(64, 1)
    embeddings = torch.randn(10, 64, requires_grad=True)
    labels = torch.arange(10)
    mixed, targets = mixer(embeddings, torch.eye(10))
    assert (targets.argmax(dim=1) == labels).all() and targets.diagonal().min() > 0.95
    assert not targets.requires_grad and mixed.requires_grad


def test_mixing_weights():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(7, (4000,), generator=generator)
    weights = draw_mixing_weights(labels, 7, 0.3, generator)
    assert torch.allclose(weights.sum(dim=1), torch.ones(4000))
    assert (weights[torch.arange(4000), labels] > 0).all()
    mixed = (weights > 0).sum(dim=1) == 2
    assert ((weights > 0).sum(dim=1) <= 2).all() and abs(float(mixed.float().mean()) - 0.3) < 0.03
    own = weights[torch.arange(4000), labels][mixed]
    assert abs(float(own.mean()) - 0.5) < 0.03  # lambda ~ U(0, 1)
    assert torch.equal(draw_mixing_weights(labels, 7, 0.0, generator), torch.eye(7)[labels])
    assert torch.equal(draw_mixing_weights(torch.zeros(3, dtype=torch.long), 1, 1.0, generator), torch.ones(3, 1))
