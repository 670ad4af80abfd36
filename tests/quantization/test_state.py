"""Saved quantized models: the round trip restores identical features; unreadable files are one-sentence errors."""

from __future__ import annotations

import clip
import pytest
import torch

from d4c.errors import D4CError
from d4c.quantization.calibration import calibrate
from d4c.quantization.qconfig import load_qconfig
from d4c.quantization.quant_clip import quantize_clip
from d4c.quantization.state import load_quant_state, quant_state_path, restore_quantized, save_quant_state
from tests.conftest import MICRO_RN


def test_round_trip_restores_the_quantized_model(tmp_path, micro_rn, fast_qconfig):
    qconfig = load_qconfig(fast_qconfig("config44"))
    torch.manual_seed(0)
    images, tokens = torch.randn(4, 3, 32, 32), clip.tokenize(["a", "b c"])
    quantize_clip(micro_rn, qconfig)
    calibrate(micro_rn, images, tokens, progress=False)
    path = quant_state_path(tmp_path / "run.json")
    assert path == tmp_path / "run.quant.pt"
    save_quant_state(path, micro_rn, qconfig, "micro-rn", info={"method": "real"})
    saved = load_quant_state(path)
    assert saved["model"] == "micro-rn" and saved["info"] == {"method": "real"}
    restored, restored_config = restore_quantized(MICRO_RN.build(seed=1), saved)
    assert restored_config.as_dict() == qconfig.as_dict()
    with torch.no_grad():
        torch.testing.assert_close(restored.encode_image(images), micro_rn.encode_image(images), rtol=0, atol=0)
        torch.testing.assert_close(restored.encode_text(tokens), micro_rn.encode_text(tokens), rtol=0, atol=0)


def test_unreadable_or_foreign_files_are_rejected(tmp_path):
    junk = tmp_path / "junk.quant.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(D4CError, match="^load_quant .* is not a readable saved quantized model"):
        load_quant_state(junk)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(D4CError, match="expected format"):
        load_quant_state(other)
