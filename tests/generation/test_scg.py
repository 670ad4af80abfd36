"""SCG geometry: boxes, masks, the batched crop-resize against per-image F.interpolate, background views."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from d4c.generation import scg


@pytest.mark.parametrize("resolution", [32, 64, 224])
def test_boxes_have_the_documented_area_aspect_and_placement(resolution, generator):
    boxes, ratios = scg.sample_boxes(4000, resolution, resolution, generator)
    top, left, h, w = boxes.unbind(1)
    assert ((ratios >= 0.4) & (ratios <= 0.7)).all()
    assert torch.equal(h, w)  # the image's (square) aspect
    expected_h = torch.tensor([math.floor(math.sqrt(r * resolution ** 2)) for r in ratios.tolist()])
    assert torch.equal(h, expected_h)  # h = floor(sqrt(r R^2))
    area = (h * w).double() / resolution ** 2
    # r in [0.4, 0.7]; the floor can only shrink the box, by less than one pixel per side.
    assert (area <= 0.7).all() and (area >= (math.floor(math.sqrt(0.4) * resolution) / resolution) ** 2).all()
    assert (area > 0.4).float().mean() > 0.9
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= resolution).all() and (left + w <= resolution).all()
    # uniform placement: both extreme positions occur, the offset fraction averages ~0.5
    slack = (resolution - h).double()
    assert (top == 0).any() and (top == resolution - h).any()
    frac = (left.double() + 0.5) / (slack + 1)
    assert abs(frac.mean().item() - 0.5) < 0.03


def test_masks_mark_exactly_the_box(generator):
    boxes, _ = scg.sample_boxes(10, 16, 16, generator)
    masks = scg.box_masks(boxes, 16, 16)
    assert masks.shape == (10, 1, 16, 16)
    for mask, (t, l, h, w) in zip(masks, boxes.tolist()):
        expected = torch.zeros(16, 16)
        expected[t:t + h, l:l + w] = 1
        assert torch.equal(mask[0], expected)


@pytest.mark.parametrize("resolution", [17, 32, 64])
def test_batched_crop_equals_per_image_crop_and_resize(resolution, generator):
    x = torch.randn(12, 3, resolution, resolution, generator=generator, dtype=torch.float64, requires_grad=True)
    boxes, _ = scg.sample_boxes(12, resolution, resolution, generator)
    batched = scg.crop_resize(x, boxes)
    reference = torch.cat([
        F.interpolate(x[i:i + 1, :, t:t + h, l:l + w], size=(resolution, resolution), mode="bilinear",
                      align_corners=False)
        for i, (t, l, h, w) in enumerate(boxes.tolist())
    ])
    assert torch.allclose(batched, reference, atol=1e-10)
    weights = torch.randn(reference.shape, generator=generator, dtype=torch.float64)
    grad_batched, = torch.autograd.grad((batched * weights).sum(), x)
    grad_reference, = torch.autograd.grad((reference * weights).sum(), x)
    assert torch.allclose(grad_batched, grad_reference, atol=1e-10)


def test_crop_of_a_full_box_is_the_identity(generator):
    x = torch.randn(2, 3, 9, 9, generator=generator, dtype=torch.float64)
    full = torch.tensor([[0, 0, 9, 9], [0, 0, 9, 9]])
    assert torch.allclose(scg.crop_resize(x, full), x, atol=1e-12)


def test_background_zeroes_the_box_and_adds_fresh_noise(generator):
    x = torch.randn(4, 3, 16, 16, generator=generator)
    boxes, _ = scg.sample_boxes(4, 16, 16, generator)
    masks = scg.box_masks(boxes, 16, 16)
    noise_gen = torch.Generator().manual_seed(5)
    first = scg.background_views(x, masks, noise_gen)
    second = scg.background_views(x, masks, noise_gen)
    expected_noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(first, x * (1 - masks) + 0.1 * expected_noise)
    assert not torch.allclose(first, second)  # fresh noise every call
    residual = (first - x * (1 - masks)) / 0.1
    assert abs(residual.std().item() - 1) < 0.05
