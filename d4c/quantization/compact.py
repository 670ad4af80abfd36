"""The compact saved-model format: integer weights (4-bit packed two per byte), in a safetensors file.

A quantized layer only ever uses its fake-quantized weight ``(q - zp) * s``, so that is what is
kept: the integer codes ``q`` (``uint8``; grids of up to 4 bits packed two codes per byte, low
nibble first; symmetric grids stored offset by ``-qmin``) beside the quantizer's scales and zero
points, which the state dict holds anyway. Restoring computes ``(q - zp) * s`` with the same
float32 operations, so the restored fake-quantized weights equal the saved model's bit for bit;
every layer is checked when it is saved (codes that reproduce the fake-quantized weight, and a
weight that the quantizer maps onto itself) and a layer that fails the check (a learned soft
rounding that was never hardened, say) is kept in float.

Every other tensor is stored as it is, except float32 tensors that float16 represents exactly
(OpenAI's checkpoints are float16, so their embeddings and norms are), which are stored in float16
and widened back on load. The header (safetensors metadata ``d4c``) is JSON: the format, the model
and its identity, the quantization config, run information, and per packed weight its shape,
bits and offset.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from torch import nn

from d4c.io import atomic_path
from d4c.quantization.qparams import broadcast_shape
from d4c.quantization.quant_clip import quantized_layers

COMPACT_FORMAT = "d4c-quantized-clip/2"
CODES_SUFFIX = ".codes"


def _weight_grid(layer: nn.Module, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and rounded zero point of ``layer``'s weight quantizer, shaped to broadcast over ``weight``."""
    quantizer = layer.weight_quantizer
    scale, zero_point = quantizer.scale.detach(), quantizer.zero_point.detach().round()
    if quantizer.ch_axis >= 0:
        shape = broadcast_shape(weight, quantizer.ch_axis)
        return scale.reshape(shape), zero_point.reshape(shape)
    return scale.reshape(()), zero_point.reshape(())


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """``(q - zp) * s`` in float32: the restored weight (the same operations at save and load)."""
    return (codes.float() - zero_point) * scale


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Non-negative integer codes -> ``uint8``; two per byte (low nibble first) for ``bits <= 4``."""
    flat = codes.reshape(-1).to(torch.uint8)
    if bits > 4:
        return flat
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    return flat[0::2] | (flat[1::2] << 4)


def unpack_codes(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: ``numel`` codes as ``uint8``."""
    if bits > 4:
        return packed[:numel]
    out = torch.stack([packed & 0x0F, packed >> 4], dim=1).reshape(-1)
    return out[:numel]


def _codes_of(layer: nn.Module) -> tuple[torch.Tensor, dict] | None:
    """The integer codes of ``layer``'s fake-quantized weight and their layout, or None to keep it in float."""
    quantizer = layer.weight_quantizer
    if not quantizer.fake_quant_enabled or getattr(quantizer, "soft", False) or quantizer.bit > 8:
        return None
    with torch.no_grad():
        target = quantizer(layer.weight).detach().float()
        scale, zero_point = _weight_grid(layer, target)
        codes = torch.round(target.double() / scale.double()) + zero_point.double()
        if not bool(((codes >= quantizer.qmin) & (codes <= quantizer.qmax)).all()):
            return None
        restored = dequantize(codes, scale, zero_point)
        if not (torch.equal(restored, target) and torch.equal(quantizer(restored).detach().float(), restored)):
            return None
    offset = -quantizer.qmin
    layout = {"shape": list(target.shape), "bits": quantizer.bit, "offset": offset, "ch_axis": quantizer.ch_axis}
    return pack_codes(codes.long() + offset, quantizer.bit), layout


def save_compact(path: str | os.PathLike, model: nn.Module, header: dict[str, Any]) -> None:
    """Write ``model``'s quantized state in the compact format, atomically."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    packed: dict[str, dict] = {}
    half: list[str] = []
    for name, layer in quantized_layers(model):
        found = _codes_of(layer)
        if found is not None:
            tensors[f"{name}.weight{CODES_SUFFIX}"], packed[f"{name}.weight"] = found
    for key, value in model.state_dict().items():
        if key in packed:
            continue
        value = value.detach().cpu()
        if value.dtype == torch.float32 and torch.equal(value.half().float(), value):
            value, _ = value.half(), half.append(key)
        tensors[key] = value.contiguous().clone()
    meta = {**header, "format": COMPACT_FORMAT, "packed": packed, "float16": half}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"d4c": json.dumps(meta, default=str)})


def is_compact(path: str | os.PathLike) -> bool:
    """True for a safetensors file (its first 8 bytes give a header length, then a JSON object)."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 30


def read_compact(path: str | os.PathLike) -> dict[str, Any]:
    """The header of a compact file plus its ``state_dict`` (float weights restored from their codes).

    Raises ValueError when the file is not one (the caller words the sentence).
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("d4c", "{}"))
        if meta.get("format") != COMPACT_FORMAT:
            raise ValueError(f"expected format {COMPACT_FORMAT}")
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    for key in meta.get("float16", []):
        tensors[key] = tensors[key].float()
    for key, layout in meta.get("packed", {}).items():
        layer = key[: -len(".weight")]
        shape = layout["shape"]
        numel = 1
        for size in shape:
            numel *= size
        codes = unpack_codes(tensors.pop(key + CODES_SUFFIX), layout["bits"], numel).reshape(shape)
        codes = codes.long() - layout["offset"]
        scale = tensors[f"{layer}.weight_quantizer.scale"]
        zero_point = tensors[f"{layer}.weight_quantizer.zero_point"].round()
        if layout["ch_axis"] >= 0:
            view = [1] * len(shape)
            view[layout["ch_axis"]] = -1
            scale, zero_point = scale.reshape(view), zero_point.reshape(view)
        else:
            scale, zero_point = scale.reshape(()), zero_point.reshape(())
        tensors[key] = dequantize(codes, scale, zero_point)
    meta["state_dict"] = tensors
    return meta
