"""PAE: documented probabilities and ranges (fixed-seed statistics), exact effects, differentiability."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage
import torch

from d4c.generation import pae

N_DRAWS = 20000


@pytest.fixture(scope="module")
def drawn():
    return pae.sample_perturbations(N_DRAWS, 32, torch.Generator().manual_seed(7))


@pytest.mark.parametrize("field, probability", [("flip", 0.5), ("blur", 0.3), ("erase", 0.3)])
def test_each_random_perturbation_fires_with_its_probability(drawn, field, probability):
    rate = getattr(drawn, field).float().mean().item()
    sigma = math.sqrt(probability * (1 - probability) / N_DRAWS)
    assert abs(rate - probability) < 4 * sigma, rate


@pytest.mark.parametrize("field, low, high", [
    ("angle", -math.radians(15), math.radians(15)),
    ("scale", 0.95, 1.05),
    ("translate_x", -0.05, 0.05),
    ("translate_y", -0.05, 0.05),
    ("brightness", 0.6, 1.4),
    ("contrast", 0.6, 1.4),
    ("saturation", 0.6, 1.4),
])
def test_continuous_parameters_are_uniform_on_their_range(drawn, field, low, high):
    values = getattr(drawn, field).double()
    assert values.min() >= low - 1e-6 and values.max() <= high + 1e-6
    span = high - low
    assert values.min() < low + 0.01 * span and values.max() > high - 0.01 * span
    # uniform: mean at the centre, variance span^2 / 12 (4-sigma tolerances)
    assert abs(values.mean().item() - (low + high) / 2) < 4 * span / math.sqrt(12 * N_DRAWS)
    assert abs(values.var().item() / (span ** 2 / 12) - 1) < 0.05


def test_erase_centres_cover_the_image(drawn):
    for centre in (drawn.erase_y, drawn.erase_x):
        assert centre.min() == 0 and centre.max() == 31
        assert abs(centre.double().mean().item() - 15.5) < 0.3


def test_draws_are_fresh_per_call_and_reproducible_per_seed():
    a = pae.sample_perturbations(64, 32, torch.Generator().manual_seed(1))
    b = pae.sample_perturbations(64, 32, torch.Generator().manual_seed(1))
    assert torch.equal(a.angle, b.angle) and torch.equal(a.flip, b.flip)
    g = torch.Generator().manual_seed(1)
    first, second = pae.sample_perturbations(64, 32, g), pae.sample_perturbations(64, 32, g)
    assert not torch.equal(first.angle, second.angle)


def _image(seed=0, n=2, size=8):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_identity_parameters_leave_images_unchanged():
    x = _image()
    assert torch.allclose(pae.apply_perturbations(x, pae.PerturbationParams.identity(2)), x, atol=1e-12)


def test_flip_is_an_exact_horizontal_flip():
    x = _image()
    params = pae.PerturbationParams.identity(2)
    params.flip = torch.tensor([True, False])
    out = pae.apply_perturbations(x, params)
    assert torch.allclose(out[0], x[0].flip(-1), atol=1e-12) and torch.allclose(out[1], x[1], atol=1e-12)


def test_affine_convention_translation_and_rotation():
    x = _image(size=8)
    params = pae.PerturbationParams.identity(2)
    params.translate_x = torch.full((2,), 2 / 8)  # one pixel in [-1, 1] grid units: output j samples input j + 1
    out = pae.flip_affine(x, params)
    assert torch.allclose(out[..., :-1], x[..., 1:], atol=1e-12) and (out[..., -1] == 0).all()  # zero padding
    params = pae.PerturbationParams.identity(2)
    params.angle = torch.full((2,), math.pi / 2)
    assert torch.allclose(pae.flip_affine(x, params), torch.rot90(x, k=1, dims=(-2, -1)), atol=1e-6)
    params = pae.PerturbationParams.identity(2)
    params.scale = torch.full((2,), 0.5)  # samples the central half: a 2x zoom
    zoomed = pae.flip_affine(x, params)
    assert torch.allclose(zoomed[..., 3:5, 3:5].mean(), x[..., 3:5, 3:5].mean(), atol=0.5)


def test_colour_factors_follow_their_formulas():
    x = _image()
    params = pae.PerturbationParams.identity(2)
    params.brightness = torch.tensor([1.3, 0.7])
    params.contrast = torch.tensor([0.9, 1.2])
    params.saturation = torch.tensor([0.6, 1.4])
    out = pae.color_jitter(x, params).numpy()
    xn = x.numpy()
    for i, (b, c, s) in enumerate([(1.3, 0.9, 0.6), (0.7, 1.2, 1.4)]):
        scaled = xn[i] * b * c
        expected = s * scaled + (1 - s) * scaled.mean(axis=0, keepdims=True)
        assert np.allclose(out[i], expected, atol=1e-6)


def test_blur_is_the_binomial_kernel_with_zero_padding():
    x = _image()
    out = pae.blur(x, torch.tensor([True, False])).numpy()
    kernel = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16
    for ch in range(3):
        expected = scipy.ndimage.correlate(x[0, ch].numpy(), kernel, mode="constant", cval=0.0)
        assert np.allclose(out[0, ch], expected, atol=1e-12)
    assert np.allclose(out[1], x[1].numpy())


def test_erase_shifts_the_square_inside_at_the_top_left_and_clips_it_at_the_bottom_right():
    x = _image(n=3, size=20)
    params = pae.PerturbationParams.identity(3)
    params.erase = torch.tensor([True, True, True])
    centres = [(10, 5), (1, 19), (0, 0)]
    params.erase_y, params.erase_x = torch.tensor([c[0] for c in centres]), torch.tensor([c[1] for c in centres])
    out = pae.erase(x, params).numpy()
    side = int(0.2 * 20)
    for i, (cy, cx) in enumerate(centres):
        expected = x[i].numpy().copy()
        y1, x1 = max(cy - side // 2, 0), max(cx - side // 2, 0)  # the reference's corner
        expected[:, y1:min(y1 + side, 20), x1:min(x1 + side, 20)] = 0
        assert np.array_equal(out[i], expected)
    assert (out[2] == 0).sum() == 3 * side * side  # top-left corner: the whole square, shifted inside
    assert (out[1] == 0).sum() < 3 * side * side  # right border: clipped


@pytest.mark.parametrize("name", ["flip_affine", "color_jitter", "blur", "erase", "apply_perturbations"])
def test_every_perturbation_is_differentiable(name):
    params = pae.sample_perturbations(3, 6, torch.Generator().manual_seed(3), dtype=torch.float64)
    params.flip = torch.tensor([True, False, True])
    params.blur = torch.tensor([True, False, True])
    params.erase = torch.tensor([True, True, False])
    x = torch.randn(3, 3, 6, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64, requires_grad=True)
    function = getattr(pae, name)
    arg = params.blur if name == "blur" else params
    assert torch.autograd.gradcheck(lambda v: function(v, arg), (x,), eps=1e-6, atol=1e-5)
    grad, = torch.autograd.grad(function(x, arg).sum(), x)
    assert grad.abs().sum() > 0
