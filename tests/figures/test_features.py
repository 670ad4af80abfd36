"""``features``: the PCA map against numpy's SVD, the summaries against numpy, t-SNE as the option."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from d4c.data.datasets import build_dataset, sample_images
from d4c.data.prompts import DIGITS_PROMPTS
from d4c.figures import features
from d4c.figures.cli import main
from d4c.generation.engine import initial_images


def _normalised(model, pixels):
    with torch.no_grad():
        return F.normalize(model.encode_image(pixels).float(), dim=-1).double().numpy()


def test_the_cli_map_is_the_pca_of_numpys_svd_and_the_summaries_are_numpys(figure_cache, vit, tmp_path):
    folder, outcomes = figure_cache
    out = tmp_path / "features.png"
    assert main(["features", "--cache", str(folder), "--model", "tiny-vit", "--custom_file", str(DIGITS_PROMPTS),
                 "--dataset", "digits", "--num_real", "20", "-o", str(out)]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    assert [g["method"] for g in data["groups"]] == ["real", "gaussian", "pse", "d4c0", "d4c3"]

    real = sample_images(build_dataset("digits", None, "test", vit.preprocess), 20, 0)
    groups = [real, initial_images(4, vit.resolution, 0)[0]] + [outcomes[r].images for r in ("pse", "d4c0", "d4c3")]
    feats = [_normalised(vit.model, g) for g in groups]
    stacked = np.concatenate(feats)
    centred = stacked - stacked.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    expected = centred @ vt[:2].T
    actual = np.concatenate([np.array(g["xy"]) for g in data["groups"]])
    signs = np.sign((expected * actual).sum(axis=0))  # a component's sign is arbitrary
    assert np.abs(actual * signs - expected).max() < 1e-4 * np.abs(expected).max()
    ratio = singular[:2] ** 2 / (singular ** 2).sum()
    assert np.allclose(data["explained_variance_ratio"], ratio, rtol=1e-6)

    centroid = feats[0].mean(axis=0)
    for group, f in zip(data["groups"], feats):
        n = len(f)
        cosines = [f[i] @ f[j] for i in range(n) for j in range(n) if i != j]
        assert group["mean_pairwise_cosine"] == pytest.approx(np.mean(cosines), rel=1e-6)
        assert group["mean_distance_to_real_centroid"] == pytest.approx(
            np.mean([np.linalg.norm(row - centroid) for row in f]), rel=1e-6)
        assert group["centroid_distance_to_real"] == pytest.approx(np.linalg.norm(f.mean(axis=0) - centroid),
                                                                   rel=1e-6, abs=1e-9)
    assert data["groups"][0]["centroid_distance_to_real"] == pytest.approx(0, abs=1e-9)
    assert len(data["text_targets"]["xy"]) == 40


def test_two_labelled_panels_and_tsne_as_the_option(figure_cache, vit, prompts):
    _, outcomes = figure_cache
    real = initial_images(6, vit.resolution, 3)[0]
    sets = [(row, o.images) for row, o in outcomes.items()]
    figure, data = features.features_figure(real, sets, vit.model, prompts, torch.device("cpu"))
    assert len(figure.axes) == 2 and all(ax.get_xlabel() and ax.get_ylabel() for ax in figure.axes)
    assert figure.axes[0].get_xlabel().startswith("PC 1")
    figure, data = features.features_figure(real, sets, vit.model, prompts, torch.device("cpu"), embedding="tsne")
    assert data["embedding"] == "tsne" and figure.axes[0].get_xlabel() == "t-SNE 1"
    assert np.isfinite(np.array(data["groups"][1]["xy"])).all()
