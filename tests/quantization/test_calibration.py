"""Calibration: what the activation and weight observers see, and the quantizers' state afterwards."""

from __future__ import annotations

import copy

import clip
import pytest
import torch

from d4c.models.loading import load_clip
from d4c.quantization.calibration import calibrate
from d4c.quantization.qconfig import load_qconfig
from d4c.quantization.qparams import calculate_qparams
from d4c.quantization.quant_clip import named_quantizers, quantize_clip


@pytest.fixture(scope="module")
def tiny_vit():
    return load_clip("tiny-vit")


def test_activation_observers_see_the_first_32_samples_and_weights_their_values(tiny_vit, fast_qconfig):
    model = copy.deepcopy(tiny_vit.model)
    reference = copy.deepcopy(model)
    torch.manual_seed(0)
    images = torch.randn(40, 3, 32, 32)
    images[32:] *= 100  # samples past the first 32 would widen the observed ranges
    tokens = clip.tokenize([f"text number {i}" for i in range(40)])
    seen = {}
    handle = reference.visual.transformer.resblocks[0].mlp.c_proj.register_forward_pre_hook(
        lambda _m, args: seen.setdefault("c_proj_input", args[0]))
    with torch.no_grad():
        reference.encode_image(images[:32])
    handle.remove()
    quantize_clip(model, load_qconfig(fast_qconfig("config48")))
    calibrate(model, images, tokens, progress=False)
    c_proj = model.visual.transformer.resblocks[0].mlp.c_proj
    x = seen["c_proj_input"]
    scale, zp = calculate_qparams(x.min(), x.max(), 0, 255, False)
    assert c_proj.input_quantizer.scale.item() == pytest.approx(scale.item(), rel=1e-5)
    assert c_proj.input_quantizer.zero_point.item() == zp.item()
    w = c_proj.weight.detach()
    w_scale, _ = calculate_qparams(w.min(1).values, w.max(1).values, 0, 15, False)
    torch.testing.assert_close(c_proj.weight_quantizer.scale, w_scale)
    assert all(q.fake_quant_enabled and not q.observer_enabled for _, q in named_quantizers(model))


def _mse_activation_config(fast_qconfig) -> str:
    """W4A8 with the paper's MSEObserver on the activations (min-max weights: fast)."""
    return fast_qconfig("config48", a_qconfig={"observer": "MSEObserver"})


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn"])
def test_activation_searches_on_a_thread_pool_give_the_ranges_of_the_forward(name, fast_qconfig, monkeypatch):
    import d4c.quantization.calibration as calibration

    loaded = load_clip(name)
    qconfig = load_qconfig(_mse_activation_config(fast_qconfig))
    torch.manual_seed(0)
    images = torch.randn(8, 3, loaded.resolution, loaded.resolution)
    tokens = clip.tokenize([f"a photo of the digit {i}." for i in range(8)], context_length=77)
    inline = quantize_clip(copy.deepcopy(loaded.model), qconfig)
    calibrate(inline, images, tokens, progress=False, workers=0)  # each quantizer searches in the forward
    flushes = []
    original = calibration.DeferredObservations.flush
    monkeypatch.setattr(calibration, "DEFERRED_BYTES", 2**20)  # several flushes during the forward
    monkeypatch.setattr(calibration.DeferredObservations, "flush",
                        lambda self: (flushes.append(len(self.kept)), original(self)))
    pooled = quantize_clip(copy.deepcopy(loaded.model), qconfig)
    calibrate(pooled, images, tokens, progress=False, workers=2)
    assert len(flushes) > 1 and sum(flushes) == sum(1 for _, q in named_quantizers(pooled, "activation")
                                                   if q.observer.searches)
    for (n, a), (_, b) in zip(named_quantizers(inline), named_quantizers(pooled)):
        assert torch.equal(a.scale, b.scale) and torch.equal(a.zero_point, b.zero_point), n
        assert b.observation_sink is None


def test_a_failing_search_stops_calibration_and_leaves_no_sink(fast_qconfig, monkeypatch, tiny_vit):
    model = quantize_clip(copy.deepcopy(tiny_vit.model), load_qconfig(_mse_activation_config(fast_qconfig)))
    quantizer = model.visual.transformer.resblocks[1].mlp.c_fc.input_quantizer

    def fail(x):
        raise RuntimeError("search failed")

    monkeypatch.setattr(quantizer, "observe", fail)
    with pytest.raises(RuntimeError, match="search failed"):
        calibrate(model, torch.randn(4, 3, 32, 32), clip.tokenize(["a", "b"]), progress=False, workers=2)
    assert all(q.observation_sink is None for _, q in named_quantizers(model))


@pytest.mark.parametrize("workers", [1, 2])
def test_shared_inputs_are_searched_once_with_the_ranges_of_separate_searches(workers, fast_qconfig, tiny_vit):
    qconfig = load_qconfig(_mse_activation_config(fast_qconfig))
    torch.manual_seed(1)
    images, tokens = torch.randn(6, 3, 32, 32), clip.tokenize([f"a photo of {i} things" for i in range(6)])
    inline = quantize_clip(copy.deepcopy(tiny_vit.model), qconfig)
    calibrate(inline, images, tokens, progress=False, workers=0)
    deferred = quantize_clip(copy.deepcopy(tiny_vit.model), qconfig)
    searched = []
    for name, quantizer in named_quantizers(deferred, "activation"):
        forward = quantizer.observer.forward
        quantizer.observer.forward = lambda x, _f=forward, _n=name: (searched.append(_n), _f(x))[1]
    calibrate(deferred, images, tokens, progress=False, workers=workers)
    for (n, a), (_, b) in zip(named_quantizers(inline), named_quantizers(deferred)):
        assert torch.equal(a.scale, b.scale) and torch.equal(a.zero_point, b.zero_point), n
    # Of each block's q/k/v projections (one input) only one searched; every other quantizer did.
    blocks = len(tiny_vit.model.visual.transformer.resblocks) + len(tiny_vit.model.transformer.resblocks)
    mse = sum(1 for _, q in named_quantizers(deferred, "activation") if q.observer.searches)
    assert len(searched) == len(set(searched)) == mse - 2 * blocks
    assert not any(".k_proj." in n or ".v_proj." in n for n in searched)


def test_an_input_changed_in_place_at_the_same_address_is_kept_again():
    from d4c.quantization.calibration import DeferredObservations
    from d4c.quantization.fake_quant import FixedFakeQuantize
    from d4c.quantization.observers import MSEObserver

    quantizers = [FixedFakeQuantize(MSEObserver(8, False), 8, False) for _ in range(3)]
    deferred = DeferredObservations(workers=1)
    x = torch.randn(64, 8)
    deferred(quantizers[0], x)
    deferred(quantizers[1], x)  # the same data: shared
    x.mul_(3)  # same address, new values
    deferred(quantizers[2], x)
    kept = [deferred.kept[q][0] for q in quantizers]
    assert kept[0] is kept[1] and kept[2] is not kept[0] and torch.equal(kept[2], x)
    deferred.flush()
    assert deferred.searches == 2
    solo = FixedFakeQuantize(MSEObserver(8, False), 8, False)
    solo.observe(x)
    assert torch.equal(quantizers[2].scale, solo.scale) and torch.equal(quantizers[2].zero_point, solo.zero_point)
    assert torch.equal(quantizers[0].scale, quantizers[1].scale) and not torch.equal(quantizers[0].scale, solo.scale)


def test_observers_of_other_settings_or_state_are_not_grouped():
    from d4c.quantization.observers import MSEFastObserver, MSEObserver

    x = torch.randn(100)
    a, b = MSEObserver(8, False), MSEObserver(8, False)
    assert a.equivalent(b)
    assert not a.equivalent(MSEObserver(4, False)) and not a.equivalent(MSEFastObserver(8, False))
    assert not a.equivalent(MSEObserver(8, True)) and not a.equivalent(MSEObserver(8, False, ch_axis=0))
    b(x)
    assert not a.equivalent(b)
    a(x)
    assert a.equivalent(b)
    a(x * 2)
    c = MSEObserver(8, False)
    c.adopt(a)
    assert c.equivalent(a) and c.batches == 2 and torch.equal(c.max_val, a.max_val)
