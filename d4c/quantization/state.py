"""Saved quantized models: hardened weights, scales, zero points and the config, in one file.

Every quantized run writes ``<result stem>.quant.pt`` next to its result JSON; a later run can
rebuild the quantized model from it (same model; ``--load_quant PATH`` on the command line) and
evaluate it without calibrating or reconstructing again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from clip.model import CLIP

from d4c.errors import D4CError
from d4c.io import load_torch, save_torch
from d4c.quantization.qconfig import QConfig, qconfig_from_dict
from d4c.quantization.quant_clip import enable_quantization, quantize_clip

STATE_FORMAT = "d4c-quantized-clip/1"
STATE_SUFFIX = ".quant.pt"


def quant_state_path(result_path: str | os.PathLike) -> Path:
    """Where the quantized model of the run writing ``result_path`` goes (``r.json`` -> ``r.quant.pt``)."""
    result_path = Path(result_path)
    return result_path.parent / (result_path.stem + STATE_SUFFIX)


def save_quant_state(path: str | os.PathLike, model: CLIP, qconfig: QConfig, model_name: str,
                     info: dict[str, Any] | None = None) -> None:
    """Write the quantized ``model`` (after calibration and any reconstruction) atomically."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_torch(path, {
        "format": STATE_FORMAT,
        "model": model_name,
        "q_config": qconfig.as_dict(),
        "q_config_path": qconfig.path,
        "info": info or {},
        "state_dict": state,
    })


def load_quant_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a file written by :func:`save_quant_state` (one-sentence errors about ``load_quant``)."""
    return load_torch(path, "saved quantized model", format=STATE_FORMAT, parameter="load_quant")


def restore_quantized(model: CLIP, saved: dict[str, Any]) -> tuple[CLIP, QConfig]:
    """Wrap ``model`` as the saved config says and load the saved weights and quantizer state."""
    qconfig = qconfig_from_dict(saved["q_config"], saved.get("q_config_path", ""))
    quantize_clip(model, qconfig)
    try:
        model.load_state_dict(saved["state_dict"])
    except RuntimeError as exc:
        reason = str(exc).splitlines()[0][:160]
        raise D4CError(f"{saved.get('model')} does not fit the saved quantized model ({reason}).", "model") from None
    enable_quantization(model)
    return model, qconfig
