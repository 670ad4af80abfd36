"""``layers``: the per-layer SQNR against one computed directly from the FP model's and the quantized model's tensors."""

from __future__ import annotations

import copy
import json
import math
import random

import clip
import numpy as np
import torch

from d4c.data.datasets import build_dataset, sample_images
from d4c.figures import layers
from d4c.figures.cli import main
from d4c.quantization.state import load_quant_state, restore_quantized


def _sqnr(reference: np.ndarray, approximation: np.ndarray) -> float:
    return 10 * math.log10((reference ** 2).sum() / ((approximation - reference) ** 2).sum())


def test_the_cli_sqnr_equals_one_from_the_tensors_directly(saved_states, vit, tmp_path):
    out = tmp_path / "layers.png"
    assert main(["layers", "--model", "tiny-vit", "--states", *map(str, saved_states), "--dataset", "digits",
                 "--num_images", "8", "--num_texts", "6", "-o", str(out)]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    assert [s["label"] for s in data["states"]] == ["W4A8 Gaussian noise", "W8A8 D4C 3 (+SCG+PAE)"]

    # Independent: the original (unwrapped) FP model's MLP Linear and encoder outputs by hooks.
    dataset = build_dataset("digits", None, "test", vit.preprocess)
    images = sample_images(dataset, 8, 0)
    texts = [t.format(c=c) for t in dataset.templates for c in dataset.classes]
    random.Random(0).shuffle(texts)
    tokens = clip.tokenize(texts[:6], context_length=vit.model.context_length)
    names = ["visual.transformer.resblocks.1.mlp.c_fc", "transformer.resblocks.2.mlp.c_proj"]

    def run(model):
        got = {}
        hooks = [model.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: got.__setitem__(n, o.detach()))
                 for n in names]
        with torch.no_grad():
            got["image features"], got["text features"] = model.encode_image(images), model.encode_text(tokens)
        for h in hooks:
            h.remove()
        end = tokens.argmax(dim=-1)
        keep = torch.arange(tokens.shape[1])[:, None] <= end[None, :]  # [L, N]: up to each end-of-text token
        got[names[1]] = got[names[1]][keep]
        return {k: v.double().numpy() for k, v in got.items()}

    fp = run(vit.model)
    for path, state in zip(saved_states, data["states"]):
        quantized, _ = restore_quantized(copy.deepcopy(vit.model), load_quant_state(path))
        q = run(quantized.eval())
        by_name = {l["name"]: l["sqnr_db"] for l in state["layers"]}
        for name in [*names, "image features", "text features"]:
            assert abs(by_name[name] - _sqnr(fp[name], q[name])) < 1e-3, name
    w4, w8 = data["states"]
    assert w8["image"]["mean_sqnr_db"] > w4["image"]["mean_sqnr_db"]  # more bits, less noise


def test_two_labelled_panels_one_line_per_state_and_every_quantized_layer(saved_states, vit):
    states = [load_quant_state(p) for p in saved_states]
    images = torch.randn(2, 3, vit.resolution, vit.resolution)
    tokens = clip.tokenize(["a loop.", "a hook on a line."], context_length=vit.model.context_length)
    sqnr = layers.layer_sqnr(vit.model, states, images, tokens)
    quantized, _ = restore_quantized(copy.deepcopy(vit.model), states[0])
    expected = [n for n, _ in layers.quantized_layers(quantized)] + ["image features", "text features"]
    assert sorted(l["name"] for l in sqnr[0]) == sorted(expected)
    figure, _ = layers.layers_figure(["a", "b"], ["pa", "pb"], sqnr)
    assert len(figure.axes) == 2
    assert all(len(ax.get_lines()) == 2 and ax.get_ylabel() == "output SQNR vs FP (dB)" for ax in figure.axes)
    assert [ax.get_xlabel().split(" ")[0] for ax in figure.axes] == ["image", "text"]
    assert layers.sqnr_db(torch.ones(3), torch.ones(3)) is None


def test_a_folder_of_result_files_chooses_the_saved_models(saved_states, tmp_path):
    from d4c.figures.sources import load_states
    from tests.figures.helpers import write_result
    gaussian, d4c3 = saved_states
    write_result(tmp_path, "g", method="gaussian", bits=(4, 8), recon=False, quant_state=str(gaussian))
    write_result(tmp_path, "d", method="d4c3", bits=(8, 8), recon=False, quant_state=str(d4c3))
    write_result(tmp_path, "fp", method="fp", bits=None, recon=False)  # no saved model: not a candidate
    assert [p for p, _ in load_states([tmp_path], "tiny-vit")] == [gaussian, d4c3]  # by bit width
    assert [p for p, _ in load_states([tmp_path], "tiny-vit", methods={"d4c3"})] == [d4c3]
    assert [p for p, _ in load_states([tmp_path], "tiny-vit", bits={"W4A8"})] == [gaussian]
