"""Saved quantized models: hardened weights, scales, zero points and the config, in one file.

Every quantized run writes ``<result stem>.quant.safetensors`` next to its result JSON, in the
compact format of :mod:`d4c.quantization.compact` (integer weights, 4-bit packed two per byte); a
later run can rebuild the quantized model from it (same model; ``--load_quant PATH`` on the
command line) and evaluate it without calibrating or reconstructing again, bit-exact. Files of the
earlier format (``<result stem>.quant.pt``, a float32 ``torch.save``) are still read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from clip.model import CLIP

from d4c.errors import D4CError
from d4c.io import load_torch
from d4c.quantization.compact import is_compact, read_compact, save_compact
from d4c.quantization.qconfig import QConfig, qconfig_from_dict
from d4c.quantization.quant_clip import enable_quantization, quantize_clip

STATE_FORMAT = "d4c-quantized-clip/1"
"""The earlier format: a ``torch.save`` dict with the float32 state dict (read, no longer written)."""
STATE_SUFFIX = ".quant.safetensors"


def quant_state_path(result_path: str | os.PathLike) -> Path:
    """Where the quantized model of the run writing ``result_path`` goes (``r.json`` -> ``r.quant.safetensors``)."""
    result_path = Path(result_path)
    return result_path.parent / (result_path.stem + STATE_SUFFIX)


def save_quant_state(path: str | os.PathLike, model: CLIP, qconfig: QConfig, model_name: str,
                     info: dict[str, Any] | None = None, identity: dict[str, Any] | None = None) -> None:
    """Write the quantized ``model`` (after calibration and any reconstruction) atomically, compactly.

    ``identity``: the model's recorded identity (which weights it was made from), matched on load.
    """
    save_compact(path, model, {"model": model_name, "model_identity": identity or {}, "q_config": qconfig.as_dict(),
                               "q_config_path": qconfig.path, "info": info or {}})


def load_quant_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a file written by :func:`save_quant_state`, or one of the earlier format (one-sentence
    errors about ``load_quant``)."""
    if Path(path).is_file() and is_compact(path):
        try:
            return read_compact(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same sentence
            raise D4CError(f"{path} is not a readable saved quantized model ({type(exc).__name__}: "
                           f"{str(exc)[:80]}).", "load_quant") from None
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
