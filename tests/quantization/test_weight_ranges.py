"""Batched, cached weight observers leave every quantizer as observing its weight directly would."""

from __future__ import annotations

import clip
import pytest
import torch

from d4c.quantization.calibration import calibrate
from d4c.quantization.qconfig import load_qconfig
from d4c.quantization.quant_clip import quantize_clip, quantized_layers
from d4c.quantization.weight_ranges import WeightRangeCache, observe_weights
from tests.conftest import MICRO_RN, MICRO_VIT, REPO_ROOT


def _wrapped(arch, config):
    return quantize_clip(arch.build(seed=0), load_qconfig(str(REPO_ROOT / "exp" / config)))


def _same_quantizers(a, b):
    for (name, la), (_, lb) in zip(quantized_layers(a), quantized_layers(b)):
        qa, qb = la.weight_quantizer, lb.weight_quantizer
        assert torch.equal(qa.scale, qb.scale) and torch.equal(qa.zero_point, qb.zero_point), name
        assert torch.equal(qa.observer.min_val, qb.observer.min_val), name
        assert torch.equal(qa.observer.max_val, qb.observer.max_val), name
        assert qa.observer.batches == qb.observer.batches and qa.observer.sidedness == qb.observer.sidedness


@pytest.mark.parametrize("arch", [MICRO_VIT, MICRO_RN])
@pytest.mark.parametrize("config", ["config48.yaml", "config44.yaml", "config88.yaml"])
def test_batched_weight_observers_equal_the_per_layer_ones(arch, config, one_thread):
    direct, batched = _wrapped(arch, config), _wrapped(arch, config)
    with torch.no_grad():
        for _, layer in quantized_layers(direct):
            layer.weight_quantizer.observe(layer.weight)
    report = observe_weights(batched, None, progress=False, workers=2)
    assert report.batched_layers == len(list(quantized_layers(batched))) and not report.from_cache
    _same_quantizers(direct, batched)


def test_the_cache_serves_the_same_ranges_and_only_for_the_same_weights(tmp_path, one_thread):
    cache = WeightRangeCache(tmp_path / "ranges")
    first, again = _wrapped(MICRO_VIT, "config48.yaml"), _wrapped(MICRO_VIT, "config48.yaml")
    stored = observe_weights(first, cache, progress=False)
    assert not stored.from_cache and stored.cache_path.is_file()
    served = observe_weights(again, cache, progress=False)
    assert served.from_cache and served.cache_path == stored.cache_path
    _same_quantizers(first, again)
    other = quantize_clip(MICRO_VIT.build(seed=1), load_qconfig(str(REPO_ROOT / "exp" / "config48.yaml")))
    assert not observe_weights(other, cache, progress=False).from_cache
    w6 = _wrapped(MICRO_VIT, "config66.yaml")  # other weight bits: another entry
    assert not observe_weights(w6, cache, progress=False).from_cache
    stored.cache_path.write_bytes(b"damaged")
    assert not observe_weights(_wrapped(MICRO_VIT, "config48.yaml"), cache, progress=False).from_cache


def test_calibrate_uses_the_cache(tmp_path, one_thread, fast_qconfig):
    cache = WeightRangeCache(tmp_path / "ranges")
    images, tokens = torch.randn(2, 3, 32, 32), clip.tokenize(["a cat", "a dog"])
    config = load_qconfig(fast_qconfig("config44", w_qconfig={"observer": "MSEObserver"}))  # min/max activations
    first = calibrate(quantize_clip(MICRO_RN.build(seed=0), config), images, tokens, progress=False, range_cache=cache)
    again = calibrate(quantize_clip(MICRO_RN.build(seed=0), config), images, tokens, progress=False, range_cache=cache)
    assert not first.from_cache and again.from_cache
