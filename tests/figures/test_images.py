"""``images``: the grid, its captions and the FP model's top prompts against a direct computation."""

from __future__ import annotations

import json

import clip
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg

from d4c.data.prompts import DIGITS_PROMPTS
from d4c.data.transforms import CLIP_MEAN, CLIP_STD
from d4c.figures import images
from d4c.figures.cli import main
from d4c.generation.engine import initial_images


def test_the_cli_writes_png_and_json_whose_numbers_match_a_direct_computation(figure_cache, vit, prompts, tmp_path):
    folder, outcomes = figure_cache
    out = tmp_path / "figs" / "images.png"
    assert main(["images", "--cache", str(folder), "--model", "tiny-vit", "--custom_file", str(DIGITS_PROMPTS),
                 "--per_method", "3", "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(out.with_suffix(".json").read_text())
    assert [m["method"] for m in data["methods"]] == ["gaussian", "pse", "d4c0", "d4c3"]

    texts = F.normalize(vit.model.encode_text(clip.tokenize(prompts)).float(), dim=-1)
    with torch.no_grad():
        for method in data["methods"]:
            pixels = (initial_images(4, vit.resolution, 0)[0] if method["method"] == "gaussian"
                      else outcomes[method["method"]].images)
            feats = F.normalize(vit.model.encode_image(pixels).float(), dim=-1)
            probs = (vit.model.logit_scale.exp() * feats @ texts.t()).softmax(dim=1)
            for shown in method["shown"]:
                i = shown["index"]
                assert shown["top_prompt"] == prompts[int(probs[i].argmax())]
                assert abs(shown["top_probability"] - float(probs[i].max())) < 1e-4
            assert abs(method["mean_top_probability"] - float(probs.max(dim=1).values.mean())) < 1e-4
            targets = outcomes[method["method"]].targets if method["method"].startswith("d4c") else None
            if targets is not None:
                assert [s["target"] for s in method["shown"]] == [prompts[int(k)] for k in targets[:3]]
                assert method["top_is_target"] == float((probs.argmax(dim=1) == targets).float().mean())
            else:
                assert "top_is_target" not in method and method["shown"][0]["target"] is None


def test_the_grid_has_one_captioned_panel_per_image_and_a_labelled_row_per_method(figure_cache, vit, prompts):
    _, outcomes = figure_cache
    sets = [images.ImageSet(row, o.images, o.targets) for row, o in outcomes.items()]
    figure, data = images.images_figure(sets, vit.model, prompts, torch.device("cpu"), per_method=2)
    assert isinstance(figure.canvas, FigureCanvasAgg)  # headless
    assert len(figure.axes) == 3 * 2
    rows = [figure.axes[2 * r] for r in range(3)]
    assert [ax.get_ylabel() for ax in rows] == ["PSE", "D4C 0 (PGSI)", "D4C 3 (+SCG+PAE)"]
    assert all(ax.get_xlabel().count("FP: ") == 1 for ax in figure.axes)
    assert "→" in figure.axes[2].get_xlabel() and "→" not in figure.axes[0].get_xlabel()  # D4C targets only


def test_pixels_are_shown_with_the_models_own_normalisation(vit):
    mean, std = images.normalization(vit.preprocess)
    assert (mean, std) == (tuple(CLIP_MEAN), tuple(CLIP_STD))
    pixels = torch.zeros(1, 3, 2, 2)
    assert torch.allclose(images.to_rgb(pixels, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2)), torch.full((1, 2, 2, 3), 0.5))
    assert images.normalization(object()) == (CLIP_MEAN, CLIP_STD)
