"""BNS: the loss against a direct NumPy computation from the BatchNorm inputs and running statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from d4c.errors import D4CError
from d4c.generation.methods.bns import BNS
from d4c.generation.settings import GenerationSettings
from tests.conftest import MICRO_RN


@pytest.fixture
def resnet():
    model = MICRO_RN.build(seed=0)
    g = torch.Generator().manual_seed(0)
    for module in model.visual.modules():  # non-trivial running statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=g) * 0.3)
            module.running_var.copy_(torch.rand(module.num_features, generator=g) + 0.5)
    return model


def _bn_inputs(model, images):
    """Every BatchNorm2d input of one forward, captured by the test's own hooks, as NumPy arrays."""
    captured = []
    hooks = [m.register_forward_pre_hook(lambda m, a: captured.append((a[0].detach().double().numpy(),
                                                                       m.running_mean.double().numpy(),
                                                                       m.running_var.double().numpy())))
             for m in model.visual.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        model.encode_image(images)
    for h in hooks:
        h.remove()
    return captured


def _tv(x):
    c, h, w = x.shape[1:]
    return np.mean(((x[..., 1:] - x[..., :-1]) ** 2).sum((1, 2, 3)) / (c * h * (w - 1))
                   + ((x[..., 1:, :] - x[..., :-1, :]) ** 2).sum((1, 2, 3)) / (c * (h - 1) * w))


def _reference_loss(model, images):
    total = 0.0
    for inputs, running_mean, running_var in _bn_inputs(model, images):
        mean = inputs.mean(axis=(0, 2, 3))
        var = inputs.var(axis=(0, 2, 3))  # NumPy's default is the biased variance
        total += np.mean((mean - running_mean) ** 2) + np.mean((var - running_var) ** 2)
    return total + 0.1 * _tv(images.double().numpy())


def test_bns_loss_equals_the_direct_computation(resnet):
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    method = BNS(resnet, GenerationSettings(method="bns"), None, torch.device("cpu"))
    method.attach()
    loss = method.loss(images, slice(0, 6), 1, torch.Generator())
    method.detach()
    assert len(method.layers) == sum(isinstance(m, nn.BatchNorm2d) for m in resnet.visual.modules()) > 10
    assert np.isclose(loss.item(), _reference_loss(resnet, images), rtol=1e-5)


def test_grouped_bns_loss_is_the_sum_over_minibatches(resnet):
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    method = BNS(resnet, GenerationSettings(method="bns"), None, torch.device("cpu"))
    method.attach()
    grouped = method.loss(images, slice(0, 6), 3, torch.Generator())
    separate = sum(method.loss(images[i:i + 2], slice(i, i + 2), 1, torch.Generator()) for i in (0, 2, 4))
    method.detach()
    assert torch.isclose(grouped, separate, rtol=1e-5)


def test_bns_hooks_are_removed_and_gradients_reach_the_pixels(resnet):
    images = torch.randn(4, 3, 32, 32, requires_grad=True)
    method = BNS(resnet, GenerationSettings(method="bns"), None, torch.device("cpu"))
    method.attach()
    method.loss(images, slice(0, 4), 1, torch.Generator()).backward()
    method.detach()
    assert images.grad.abs().sum() > 0
    assert all(not m._forward_pre_hooks for m in resnet.visual.modules())


def test_bns_on_a_vit_is_a_clear_error(micro_vit):
    with pytest.raises(D4CError, match=r"^method bns \(BNS\) needs an image encoder with BatchNorm"):
        BNS(micro_vit, GenerationSettings(method="bns"), None, torch.device("cpu"))


@pytest.mark.parametrize("groups", [1, 2])
def test_channel_statistics_agree_across_memory_formats(groups):
    from d4c.generation.methods.bns import channel_statistics

    x = torch.randn(4, 5, 6, 7, generator=torch.Generator().manual_seed(3)) * 3 + 2
    reference = x.double().unflatten(0, (groups, -1))
    expected_mean = reference.mean(dim=(1, 3, 4))
    expected_var = reference.var(dim=(1, 3, 4), unbiased=False)
    for layout in (torch.contiguous_format, torch.channels_last):
        mean, var = channel_statistics(x.contiguous(memory_format=layout), groups)
        assert torch.allclose(mean.double(), expected_mean, rtol=1e-5, atol=1e-6)
        assert torch.allclose(var.double(), expected_var, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_statistics_loss_gradient_is_the_autograd_gradient(groups, layout):
    """The one-pass analytic input gradient against autograd through the statistics in float64."""
    from d4c.generation.methods.bns import bn_statistics_loss

    gen = torch.Generator().manual_seed(4)
    x = (torch.randn(4, 6, 9, 8, generator=gen) * 2 + 0.7).contiguous(memory_format=layout).requires_grad_(True)
    running_mean, running_var = torch.randn(6, generator=gen), torch.rand(6, generator=gen) + 0.5
    loss = bn_statistics_loss(x, running_mean, running_var, groups)
    (loss * 3.0).backward()
    reference = x.detach().double().requires_grad_(True)
    grouped = reference.unflatten(0, (groups, -1))
    mean, var = grouped.mean(dim=(1, 3, 4)), grouped.var(dim=(1, 3, 4), unbiased=False)
    expected = ((mean - running_mean.double()).square().mean(1) + (var - running_var.double()).square().mean(1)).sum()
    (expected * 3.0).backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(x.grad.double(), reference.grad, rtol=1e-4, atol=1e-6 * reference.grad.abs().max().item())
    with torch.no_grad():  # no graph: the plain statistics
        assert bn_statistics_loss(x, running_mean, running_var, groups).item() == loss.item()
