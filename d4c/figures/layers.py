"""``layers``: where quantization hurts — the output SQNR of every quantized layer of both towers.

For each saved quantized model, the quantized CLIP and the full-precision CLIP each run their own
forward on the same batch of real evaluation images and evaluation texts (the dataset's zero-shot
prompts); at every quantized layer (each Linear / Conv2d with a weight quantizer, in forward
order) ``SQNR = 10 log10(Σ y² / Σ (ŷ − y)²)`` in dB, ``y`` the FP layer's output and ``ŷ`` the
quantized model's, so errors of earlier layers are included (what the layer's consumers see).
Text layers count only the tokens up to each text's end-of-text token: under the causal mask
later (padding) tokens never reach the text features. The encoders' outputs (``image features``,
``text features``) close each tower. Higher is better; each 6 dB is about one bit of precision.
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from d4c.figures.names import TOWERS, short_layer_name, tower_of
from d4c.figures.output import new_figure, style_layer_axis
from d4c.quantization.qconfig import qconfig_from_dict
from d4c.quantization.quant_clip import disable_quantization, quantize_clip, quantized_layers
from d4c.quantization.state import restore_quantized

ENCODER_OUTPUTS = {"image": "image features", "text": "text features"}
LINE_STYLES = ("-", "--", "-.", ":")


def sqnr_db(reference: torch.Tensor, approximation: torch.Tensor) -> float | None:
    """``10 log10(Σ y² / Σ (ŷ − y)²)`` in float64; None when the two are identical (infinite SQNR)."""
    reference, approximation = reference.double(), approximation.double()
    noise = float(((approximation - reference) ** 2).sum())
    if noise == 0.0:
        return None
    return 10.0 * math.log10(float((reference ** 2).sum()) / noise)


@contextmanager
def _outputs_of(model: nn.Module, consume: Callable[[str, torch.Tensor], None]) -> Iterator[None]:
    hooks = [module.register_forward_hook(lambda m, a, out, name=name: consume(name, out.detach()))
             for name, module in quantized_layers(model)]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


@torch.no_grad()
def _forward(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor,
             consume: Callable[[str, torch.Tensor], None]) -> None:
    with _outputs_of(model, consume):
        image_features = model.encode_image(images)
        text_features = model.encode_text(tokens)
    consume(ENCODER_OUTPUTS["image"], image_features.detach())
    consume(ENCODER_OUTPUTS["text"], text_features.detach())


def relevant_token_mask(tokens: torch.Tensor) -> torch.Tensor:
    """``[L, N]`` True at every position up to text n's end-of-text token (its largest token id, as CLIP finds it)."""
    end = tokens.argmax(dim=-1)
    return (torch.arange(tokens.shape[1], device=tokens.device)[:, None] <= end[None, :])


def _relevant(name: str, output: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A text layer's ``[L, N, D]`` output at the relevant tokens only (``[K, D]``); anything else as it is."""
    if tower_of(name) == "text" and output.dim() == 3 and tuple(output.shape[:2]) == tuple(mask.shape):
        return output[mask]
    return output


def fp_reference(fp_model: nn.Module, saved: dict[str, Any]) -> nn.Module:
    """A copy of ``fp_model`` wrapped like the saved model, every quantizer off: FP outputs under the same names."""
    reference = quantize_clip(copy.deepcopy(fp_model), qconfig_from_dict(saved["q_config"],
                                                                         saved.get("q_config_path", "")))
    disable_quantization(reference)
    return reference.eval()


def layer_sqnr(fp_model: nn.Module, states: Sequence[dict[str, Any]], images: torch.Tensor,
               tokens: torch.Tensor) -> list[list[dict[str, Any]]]:
    """Per saved model, ``[{name, tower, sqnr_db}]`` of every quantized layer and both encoder outputs.

    The FP outputs are computed once and kept; each quantized model's outputs are compared as they come.
    """
    mask = relevant_token_mask(tokens)
    reference: dict[str, torch.Tensor] = {}

    def keep(name: str, output: torch.Tensor) -> None:
        reference[name] = _relevant(name, output, mask)

    _forward(fp_reference(fp_model, states[0]), images, tokens, keep)
    results = []
    for saved in states:
        quantized, _ = restore_quantized(copy.deepcopy(fp_model), saved)
        quantized.eval()
        layers: list[dict[str, Any]] = []

        def compare(name: str, output: torch.Tensor) -> None:
            tower = "image" if name == ENCODER_OUTPUTS["image"] else "text" if name == ENCODER_OUTPUTS["text"] \
                else tower_of(name)
            layers.append({"name": name, "tower": tower,
                           "sqnr_db": sqnr_db(reference[name], _relevant(name, output, mask))})

        _forward(quantized, images, tokens, compare)
        results.append(layers)
        del quantized
    return results


def _summary(layers: Sequence[dict[str, Any]], tower: str) -> dict[str, Any]:
    values = [(l["sqnr_db"], l["name"]) for l in layers if l["tower"] == tower and l["sqnr_db"] is not None
              and l["name"] not in ENCODER_OUTPUTS.values()]
    output = next((l["sqnr_db"] for l in layers if l["name"] == ENCODER_OUTPUTS[tower]), None)
    if not values:
        return {"output_sqnr_db": output}
    worst = min(values)
    return {"mean_sqnr_db": float(np.mean([v for v, _ in values])), "min_sqnr_db": worst[0], "min_layer": worst[1],
            "output_sqnr_db": output}


def layers_figure(labels: Sequence[str], paths: Sequence[str],
                  sqnr: Sequence[Sequence[dict[str, Any]]]) -> tuple[Any, dict[str, Any]]:
    """Two panels (image, text tower), one line per saved model, and the data."""
    figure = new_figure(13, 7.5)
    axes = figure.subplots(2, 1)
    data: dict[str, Any] = {"states": []}
    for index, (label, path, layers) in enumerate(zip(labels, paths, sqnr)):
        data["states"].append({"label": label, "path": path, "layers": list(layers),
                               **{tower: _summary(layers, tower) for tower in TOWERS}})
    for ax, tower in zip(axes, TOWERS):
        names: list[str] = []
        for index, (label, layers) in enumerate(zip(labels, sqnr)):
            points = [l for l in layers if l["tower"] == tower]
            names = [l["name"] for l in points]
            values = [np.nan if l["sqnr_db"] is None else l["sqnr_db"] for l in points]
            ax.plot(range(len(points)), values, marker=".", linewidth=1.1, label=label,
                    linestyle=LINE_STYLES[index // 10 % len(LINE_STYLES)])
        style_layer_axis(ax, [n if n in ENCODER_OUTPUTS.values() else short_layer_name(n) for n in names],
                         f"{tower} encoder: quantized layer (forward order), then the encoder output",
                         "output SQNR vs FP (dB)")
    figure.tight_layout()
    return figure, data
