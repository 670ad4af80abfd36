"""Saved quantized models: hardened weights, scales, zero points and the config, in one file.

Every quantized run writes ``<result stem>.quant.safetensors`` next to its result JSON, in the
compact format of :mod:`d4c.quantization.compact` (integer weights, 4-bit packed two per byte);
``--load_quant PATH`` rebuilds the quantized model from it (same ``--model``) and evaluates it
without calibrating or reconstructing again, bit-exact. Files of the earlier format
(``<result stem>.quant.pt``, float32 ``torch.save``) are still read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from clip.model import CLIP

from d4c.errors import D4CError
from d4c.quantization.compact import COMPACT_FORMAT, is_compact, read_compact, save_compact
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
    """Read and check a file written by :func:`save_quant_state`, or one of the earlier format (one-sentence errors)."""
    path = Path(path)
    if not path.is_file():
        raise D4CError(f"--load_quant {path} does not exist.")
    if is_compact(path):
        try:
            return read_compact(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same sentence
            raise D4CError(f"--load_quant {path} is not a saved quantized model ({type(exc).__name__}: "
                           f"{str(exc)[:80]}).") from None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same sentence
        raise D4CError(f"--load_quant {path} is not a saved quantized model ({type(exc).__name__}).") from None
    if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT:
        raise D4CError(f"--load_quant {path} is not a saved quantized model (expected format {COMPACT_FORMAT} "
                       f"or {STATE_FORMAT}).")
    return saved


def restore_quantized(model: CLIP, saved: dict[str, Any]) -> tuple[CLIP, QConfig]:
    """Wrap ``model`` as the saved config says and load the saved weights and quantizer state."""
    qconfig = qconfig_from_dict(saved["q_config"], saved.get("q_config_path", ""))
    quantize_clip(model, qconfig)
    try:
        model.load_state_dict(saved["state_dict"])
    except RuntimeError as exc:
        reason = str(exc).splitlines()[0][:160]
        raise D4CError(f"The saved quantized model does not fit --model {saved.get('model')} ({reason}).") from None
    enable_quantization(model)
    return model, qconfig
