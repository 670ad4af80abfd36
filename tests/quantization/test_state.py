"""Saved quantized models: the round trip restores identical features; unreadable files are one-sentence errors."""

from __future__ import annotations

import json

import clip
import pytest
import torch

from d4c.errors import D4CError
from d4c.quantization.calibration import calibrate
from d4c.quantization.qconfig import load_qconfig
from d4c.quantization.compact import pack_codes, unpack_codes
from d4c.quantization.quant_clip import quantize_clip, quantized_layers
from d4c.quantization.state import STATE_FORMAT, load_quant_state, quant_state_path, restore_quantized, save_quant_state
from tests.conftest import MICRO_RN, MICRO_VIT


def test_round_trip_restores_the_quantized_model(tmp_path, micro_rn, fast_qconfig):
    qconfig = load_qconfig(fast_qconfig("config44"))
    torch.manual_seed(0)
    images, tokens = torch.randn(4, 3, 32, 32), clip.tokenize(["a", "b c"])
    quantize_clip(micro_rn, qconfig)
    calibrate(micro_rn, images, tokens, progress=False)
    path = quant_state_path(tmp_path / "run.json")
    assert path == tmp_path / "run.quant.safetensors"
    save_quant_state(path, micro_rn, qconfig, "micro-rn", info={"method": "real"})
    saved = load_quant_state(path)
    assert saved["model"] == "micro-rn" and saved["info"] == {"method": "real"}
    restored, restored_config = restore_quantized(MICRO_RN.build(seed=1), saved)
    assert restored_config.as_dict() == qconfig.as_dict()
    with torch.no_grad():
        torch.testing.assert_close(restored.encode_image(images), micro_rn.encode_image(images), rtol=0, atol=0)
        torch.testing.assert_close(restored.encode_text(tokens), micro_rn.encode_text(tokens), rtol=0, atol=0)


def _calibrated(model, qconfig, harden_random=False):
    torch.manual_seed(0)
    r = model.visual.input_resolution
    images, tokens = torch.randn(4, 3, r, r), clip.tokenize(["a photo", "of a cat"])
    quantize_clip(model, qconfig)
    calibrate(model, images, tokens, progress=False)
    if harden_random:  # learned rounding (as after reconstruction): some weights rounded the other way
        for _, layer in quantized_layers(model):
            quantizer = layer.weight_quantizer
            quantizer.init_alpha(layer.weight)
            quantizer.alpha.data = torch.randn_like(quantizer.alpha)
            quantizer.harden(layer.weight)
    return model, images, tokens


@pytest.mark.parametrize("arch, base, overrides, harden", [
    ("micro_vit", "config48", {}, True),
    ("micro_rn", "config44", {}, True),
    ("micro_vit", "config88", {}, False),
    ("micro_rn", "config66", {"w_qconfig": {"quantizer": "LSQFakeQuantize", "symmetric": True}}, False),
])
def test_compact_state_restores_every_fake_quantized_weight_bit_for_bit(tmp_path, request, fast_qconfig, arch, base,
                                                                      overrides, harden):
    model = request.getfixturevalue(arch)
    qconfig = load_qconfig(fast_qconfig(base, **overrides))
    model, images, tokens = _calibrated(model, qconfig, harden_random=harden)
    path = tmp_path / "m.quant.safetensors"
    save_quant_state(path, model, qconfig, arch)
    restored, _ = restore_quantized((MICRO_VIT if arch == "micro_vit" else MICRO_RN).build(seed=3),
                                    load_quant_state(path))
    with torch.no_grad():
        for (name, a), (_, b) in zip(quantized_layers(model), quantized_layers(restored)):
            assert torch.equal(a.weight_quantizer(a.weight), b.weight_quantizer(b.weight)), name
        assert torch.equal(restored.encode_image(images), model.encode_image(images))
        assert torch.equal(restored.encode_text(tokens), model.encode_text(tokens))


def test_compact_state_packs_low_bit_weights(tmp_path, micro_vit, fast_qconfig):
    qconfig = load_qconfig(fast_qconfig("config44"))
    model, _, _ = _calibrated(micro_vit, qconfig)
    path = tmp_path / "m.quant.safetensors"
    save_quant_state(path, model, qconfig, "micro-vit")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()["d4c"])
        for name, layer in quantized_layers(model):
            codes = f.get_tensor(f"{name}.weight.codes")
            bits = header["packed"][f"{name}.weight"]["bits"]
            assert codes.dtype == torch.uint8
            assert codes.numel() == (-(-layer.weight.numel() // 2) if bits <= 4 else layer.weight.numel())


def test_pack_codes_round_trip():
    codes = torch.randint(0, 16, (37,))
    assert torch.equal(unpack_codes(pack_codes(codes, 4), 4, 37).long(), codes)
    codes = torch.randint(0, 256, (20,))
    assert torch.equal(unpack_codes(pack_codes(codes, 8), 8, 20).long(), codes)


def test_states_of_the_earlier_format_are_still_read(tmp_path, micro_rn, fast_qconfig):
    qconfig = load_qconfig(fast_qconfig("config44"))
    model, images, _ = _calibrated(micro_rn, qconfig)
    legacy = tmp_path / "old.quant.pt"
    torch.save({"format": STATE_FORMAT, "model": "micro-rn", "q_config": qconfig.as_dict(), "q_config_path": qconfig.path,
                "info": {}, "state_dict": model.state_dict()}, legacy)
    restored, _ = restore_quantized(MICRO_RN.build(seed=1), load_quant_state(legacy))
    with torch.no_grad():
        assert torch.equal(restored.encode_image(images), model.encode_image(images))


def test_unreadable_or_foreign_files_are_rejected(tmp_path):
    junk = tmp_path / "junk.quant.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(D4CError, match="^load_quant .* is not a readable saved quantized model"):
        load_quant_state(junk)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(D4CError, match="expected format"):
        load_quant_state(other)


def test_a_broken_compact_file_is_one_sentence(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "x.quant.safetensors"
    save_file({"a": torch.zeros(2)}, str(path), metadata={"d4c": "{}"})
    with pytest.raises(D4CError, match="is not a readable saved quantized model"):
        load_quant_state(path)
