"""SimLoss_1's moving averages, the soft cross-entropy, KL and SimLoss_2, against direct computations."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from d4c.generation.methods.enhancing_dfq.losses import (FeatureMemory, kl_to_teacher, simloss2,
                                                         soft_cross_entropy)


def test_feature_memory_moving_average_and_simloss1():
    memory = FeatureMemory(num_classes=3, momentum=0.75)
    a = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 2])
    assert float(memory.loss(a, labels)) == 0.0  # nothing seen yet
    memory.update(a, labels)
    assert torch.allclose(memory.means, torch.tensor([[2.0, 1.0], [0.0, 0.0], [0.0, 1.0]]))
    b = torch.tensor([[1.0, 1.0], [4.0, 0.0], [1.0, -1.0]])
    labels_b = torch.tensor([0, 1, 2])
    # against the averages of the previous step; label 1 has none and counts 0 in the batch mean
    expected = (F.cosine_similarity(b[0], torch.tensor([2.0, 1.0]), dim=0)
                + F.cosine_similarity(b[2], torch.tensor([0.0, 1.0]), dim=0)) / 3
    assert torch.allclose(memory.loss(b, labels_b), expected)
    memory.update(b, labels_b)
    means = torch.tensor([[0.75 * 2 + 0.25 * 1, 0.75 * 1 + 0.25 * 1], [4.0, 0.0], [0.25 * 1, 0.75 * 1 - 0.25]])
    assert torch.allclose(memory.means, means) and memory.seen.all()


def test_simloss1_has_gradients_to_the_features_only():
    memory = FeatureMemory(2, 0.9)
    memory.update(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))
    features = torch.randn(4, 3, requires_grad=True)
    memory.loss(features, torch.tensor([0, 1, 1, 0])).backward()
    assert features.grad is not None and not memory.means.requires_grad


def test_soft_cross_entropy_and_kl():
    torch.manual_seed(0)
    logits = torch.randn(5, 4)
    targets = torch.softmax(torch.randn(5, 4), dim=1)
    assert torch.allclose(soft_cross_entropy(logits, targets), F.cross_entropy(logits, targets))
    hard = torch.tensor([0, 3, 1, 1, 2])
    assert torch.allclose(soft_cross_entropy(logits, F.one_hot(hard, 4).float()), F.cross_entropy(logits, hard))
    q = torch.softmax(logits, dim=1)
    expected = (targets * (targets.log() - q.log())).sum(dim=1).mean()
    assert torch.allclose(kl_to_teacher(logits, targets), expected)


def test_simloss2_sums_layer_means():
    full = [torch.ones(2, 3), torch.zeros(4)]
    quantized = [torch.zeros(2, 3), torch.full((4,), 2.0)]
    assert float(simloss2(full, quantized)) == 1.0 + 4.0
