"""Generation with a compiled image encoder: images within float rounding of eager ones; clean fallback."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from d4c.generation.engine import generate
from d4c.generation.settings import GenerationSettings

PROMPTS = [f"a photo of the digit {d}." for d in ("zero", "one", "two", "three")]


def _settings(method, compile, **overrides):
    base = GenerationSettings(method=method, num_images=8, gen_batch_size=4, gen_iter=3, gen_ckpt_every=0,
                              compile=compile).with_options(d4c_config=1)
    return dataclasses.replace(base, **overrides)


def _images(model, settings):
    return generate(model, settings, "cpu", PROMPTS if settings.method == "d4c" else None, progress=False).images


@pytest.mark.parametrize("failing", ["forward", "backward"])
def test_failed_compilation_gives_the_eager_images(micro_vit, one_thread, monkeypatch, failing):
    eager = _images(micro_vit, _settings("d4c", "off"))

    class FailingBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            raise RuntimeError("compiled backward failed")

    def fake_compile(fn, **options):
        def call(*args):
            if failing == "forward":
                raise RuntimeError("no C++ compiler in this test")
            return FailingBackward.apply(fn(*args))
        return call

    monkeypatch.setattr(torch, "compile", fake_compile)
    with pytest.warns(RuntimeWarning, match="torch.compile of the image encoder .* failed"):
        fallback = _images(micro_vit, _settings("d4c", "on"))
    assert torch.equal(fallback, eager)


@pytest.mark.slow
@pytest.mark.parametrize("arch, method", [("micro_vit", "d4c"), ("micro_rn", "bns")])
def test_compiled_encoder_images_match_eager_ones(arch, method, request, one_thread):
    """Compiled kernels round differently: after 3 iterations the images agree to 1e-4 of their scale."""
    model = request.getfixturevalue(arch)
    eager = _images(model, _settings(method, "off"))
    compiled = _images(model, _settings(method, "on"))
    assert (compiled - eager).abs().max() <= 1e-4 * eager.abs().max()
    assert not torch.equal(compiled, _images(model, _settings(method, "off", gen_iter=2)))  # the images moved


@pytest.mark.cuda
def test_compiled_encoder_on_cuda_matches_eager(micro_vit):
    model = micro_vit.cuda()
    eager = generate(model, _settings("d4c", "off"), "cuda", PROMPTS, progress=False).images
    compiled = generate(model, _settings("d4c", "on"), "cuda", PROMPTS, progress=False).images
    assert (compiled - eager).abs().max() <= 1e-3 * eager.abs().max()
