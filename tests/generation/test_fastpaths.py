"""Fast paths of the image encoder give the unmodified encoder's values and pixel gradients."""

from __future__ import annotations

import pytest
import torch

from d4c.generation.fastpaths import encode_images, fast_image_encoder, patch_embedding
from tests.numerics import assert_relative_close

# Another kernel (matmul for convolution, channels-last, folded BatchNorm) rounds differently on every
# CPU: the values and pixel gradients are compared by relative error. Measured here: values <= 5e-7,
# gradients (which cancel through BatchNorm) <= 9e-6.
REL = 1e-5
GRAD_REL = 1e-4


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
    assert_relative_close(ours, ref, REL, "patch embedding")
    assert_relative_close(our_grad, ref_grad, GRAD_REL, "its input gradient")


def test_fast_vit_encoder_matches_and_is_restored(tiny_vit):
    model = tiny_vit.model
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ref, ref_grad = _value_and_grad(model.encode_image, images)
    with fast_image_encoder(model):
        assert "forward" in vars(model.visual.conv1)
        ours, our_grad = _value_and_grad(model.encode_image, images)
    assert "forward" not in vars(model.visual.conv1)
    assert_relative_close(ours, ref, REL, "features")
    assert_relative_close(our_grad, ref_grad, GRAD_REL, "pixel gradients")
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
    assert_relative_close(ours, ref, REL, "features")
    assert_relative_close(our_grad, ref_grad, GRAD_REL, "pixel gradients")


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
    assert_relative_close(ours, ref, REL, "features")  # folding rounds the weights once more
    assert_relative_close(our_grad, ref_grad, GRAD_REL, "pixel gradients")
    with fast_image_encoder(model, fold_batchnorm=False):
        assert "forward" not in vars(bns[0])
    hook.remove()
    assert all("forward" not in vars(m) for m in model.visual.modules())
    again, _ = _value_and_grad(model.encode_image, images)
    assert torch.equal(again, ref)
