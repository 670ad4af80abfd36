"""Fast paths of the image encoder give the unmodified encoder's values and pixel gradients."""

from __future__ import annotations

import pytest
import torch

from d4c.generation.fastpaths import encode_images, fast_image_encoder, patch_embedding


def _value_and_grad(function, images):
    x = images.clone().requires_grad_(True)
    out = function(x)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(9))
    grad, = torch.autograd.grad((out * weights).sum(), x)
    return out.detach(), grad


def test_patch_embedding_equals_the_patch_convolution(tiny_vit):
    conv = tiny_vit.model.visual.conv1
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ours, our_grad = _value_and_grad(lambda x: patch_embedding(conv, x), images)
    ref, ref_grad = _value_and_grad(conv, images)
    assert ours.shape == ref.shape and torch.allclose(ours, ref, atol=1e-5)
    assert torch.allclose(our_grad, ref_grad, atol=1e-5)


def test_fast_vit_encoder_matches_and_is_restored(tiny_vit):
    model = tiny_vit.model
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ref, ref_grad = _value_and_grad(model.encode_image, images)
    with fast_image_encoder(model):
        assert "forward" in vars(model.visual.conv1)
        ours, our_grad = _value_and_grad(model.encode_image, images)
    assert "forward" not in vars(model.visual.conv1)
    assert torch.allclose(ours, ref, atol=1e-5) and torch.allclose(our_grad, ref_grad, atol=1e-5)
    with pytest.raises(RuntimeError):
        with fast_image_encoder(model):
            raise RuntimeError
    assert "forward" not in vars(model.visual.conv1)


def test_fast_encoder_leaves_resnets_alone_without_folding(tiny_rn):
    with fast_image_encoder(tiny_rn.model, fold_batchnorm=False):
        assert all("forward" not in vars(m) for m in tiny_rn.model.visual.modules())


def test_channels_last_resnet_input_matches(tiny_rn):
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    ours, our_grad = _value_and_grad(lambda x: encode_images(tiny_rn.model, x), images)
    ref, ref_grad = _value_and_grad(tiny_rn.model.encode_image, images)
    # oneDNN's channels-last kernels sum in another order: tolerances relative to the magnitudes
    assert torch.allclose(ours, ref, atol=1e-5 * ref.abs().max().item(), rtol=1e-5)
    assert torch.allclose(our_grad, ref_grad, atol=1e-5 * ref_grad.abs().max().item(), rtol=1e-5)


def test_folded_batchnorm_resnet_matches_and_is_restored(tiny_rn):
    from d4c.generation.fastpaths import conv_batchnorm_pairs

    model = tiny_rn.model
    pairs = conv_batchnorm_pairs(model.visual)
    bns = [m for m in model.visual.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {id(bn) for _, bn in pairs} == {id(bn) for bn in bns}  # every BN follows a conv
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    ref, ref_grad = _value_and_grad(model.encode_image, images)
    seen = []
    hook = bns[0].register_forward_pre_hook(lambda m, a: seen.append(1))
    with fast_image_encoder(model, fold_batchnorm=True):
        ours, our_grad = _value_and_grad(lambda x: encode_images(model, x), images)
    assert torch.allclose(ours, ref, atol=1e-4, rtol=1e-4) and torch.allclose(our_grad, ref_grad, atol=1e-4, rtol=1e-4)
    with fast_image_encoder(model, fold_batchnorm=False):
        assert "forward" not in vars(bns[0])
    hook.remove()
    assert all("forward" not in vars(m) for m in model.visual.modules())
    again, _ = _value_and_grad(model.encode_image, images)
    assert torch.equal(again, ref)
