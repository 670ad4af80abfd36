"""``features``: where each method's pseudo images sit in the FP image encoder's feature space.

All features are the FP model's L2-normalised image features ``n(f_I(x))``. The 2-D map is a
PCA (scikit-learn) fitted on the image features (real and every method's pseudo images); the
text targets ``n(f_T(prompt))`` of the generation prompts are projected into it (CLIP's modality
gap would otherwise take the first component). ``embedding="tsne"`` uses scikit-learn's t-SNE on
images and texts together instead. Scalar summaries per set, real images included:

* ``mean_pairwise_cosine``: the mean cosine similarity of two different images (lower = more diverse);
* ``mean_distance_to_real_centroid``: the mean Euclidean distance of an image's feature to the
  centroid of the real images' features (the real images' own value is the reference);
* ``centroid_distance_to_real``: the distance between the set's centroid and the real centroid.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from d4c.figures.output import new_figure, row_color
from d4c.figures.names import row_name
from d4c.generation.diagnostics import image_features
from d4c.generation.pgsi import encode_text_targets

EMBEDDINGS = ("pca", "tsne")


def mean_pairwise_cosine(features: np.ndarray) -> float:
    """Mean cosine similarity over pairs of different rows of L2-normalised ``features``."""
    n = len(features)
    if n < 2:
        return float("nan")
    similarity = features @ features.T
    return float((similarity.sum() - np.trace(similarity)) / (n * (n - 1)))


def feature_summaries(features: np.ndarray, real_centroid: np.ndarray) -> dict[str, float]:
    """The scalar summaries of one set's L2-normalised features against the real images' centroid."""
    return {
        "mean_pairwise_cosine": mean_pairwise_cosine(features),
        "mean_distance_to_real_centroid": float(np.linalg.norm(features - real_centroid, axis=1).mean()),
        "centroid_distance_to_real": float(np.linalg.norm(features.mean(axis=0) - real_centroid)),
    }


def embed(images: np.ndarray, texts: np.ndarray, embedding: str = "pca",
          seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """2-D coordinates of the image and text features, and what the embedding was (variance ratios for PCA)."""
    if embedding == "pca":
        pca = PCA(n_components=2, svd_solver="full").fit(images)
        return pca.transform(images), pca.transform(texts), {
            "embedding": "pca", "fitted_on": "image features",
            "explained_variance_ratio": pca.explained_variance_ratio_.tolist()}
    both = np.concatenate([images, texts])
    perplexity = float(min(30.0, max(2.0, (len(both) - 1) / 3)))
    coords = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(both)
    return coords[:len(images)], coords[len(images):], {"embedding": "tsne", "perplexity": perplexity,
                                                         "fitted_on": "image and text features"}


def features_figure(real: torch.Tensor, sets: Sequence[tuple[str, torch.Tensor]], model: torch.nn.Module,
                    prompts: Sequence[str], device: torch.device, embedding: str = "pca",
                    seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """The map and the summaries.

    Args:
        real: real images in the model's normalised pixel space.
        sets: ``(row, images)`` of each method.
        model: the full-precision CLIP.
        prompts: the generation prompts (their text features are the targets shown).
        device: where the FP model runs.
        embedding: ``pca`` or ``tsne``.
        seed: t-SNE's random state.
    """
    groups = [("real", real)] + list(sets)
    features = [image_features(model, images.to(device)).cpu().numpy().astype(np.float64) for _, images in groups]
    texts = encode_text_targets(model, prompts, device).cpu().numpy().astype(np.float64)
    stacked = np.concatenate(features)
    image_xy, text_xy, how = embed(stacked, texts, embedding, seed)
    real_centroid = features[0].mean(axis=0)

    figure = new_figure(12, 5)
    map_ax, bar_ax = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1.3, 1]})
    data: dict[str, Any] = {**how, "groups": [], "text_targets": {"prompts": list(prompts), "xy": text_xy.tolist()}}
    start = 0
    for (row, _), group in zip(groups, features):
        xy = image_xy[start:start + len(group)]
        start += len(group)
        label = "real images" if row == "real" else row_name(row)
        map_ax.scatter(xy[:, 0], xy[:, 1], s=10 if row == "real" else 14, alpha=0.5 if row == "real" else 0.8,
                       color="#bbbbbb" if row == "real" else row_color(row), label=label, edgecolors="none")
        data["groups"].append({"method": row, "images": len(group), "xy": xy.tolist(),
                               **feature_summaries(group, real_centroid)})
    map_ax.scatter(text_xy[:, 0], text_xy[:, 1], marker="x", s=18, color="black", linewidths=0.8,
                   label="text targets")
    if embedding == "pca":
        ratio = how["explained_variance_ratio"]
        map_ax.set_xlabel(f"PC 1 ({100 * ratio[0]:.0f} % of the image-feature variance)", fontsize=8)
        map_ax.set_ylabel(f"PC 2 ({100 * ratio[1]:.0f} %)", fontsize=8)
    else:
        map_ax.set_xlabel("t-SNE 1", fontsize=8)
        map_ax.set_ylabel("t-SNE 2", fontsize=8)
    map_ax.set_title("FP image features (normalised), one point per image", fontsize=9)
    map_ax.legend(fontsize=7, markerscale=1.5, loc="best")
    map_ax.tick_params(labelsize=7)

    names = ["real images" if g["method"] == "real" else row_name(g["method"]) for g in data["groups"]]
    x = np.arange(len(names))
    bars = (("mean_pairwise_cosine", "#6baed6", "mean pairwise cosine (lower: more diverse)"),
            ("centroid_distance_to_real", "#fd8d3c", "distance of the set's centroid to the real centroid"),
            ("mean_distance_to_real_centroid", "#fdd0a2", "mean distance of an image to the real centroid"))
    for i, (key, color, label) in enumerate(bars):
        bar_ax.bar(x + (i - 1) * 0.27, [g[key] for g in data["groups"]], width=0.27, color=color, label=label)
    bar_ax.set_xticks(x)
    bar_ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
    bar_ax.set_xlabel("images", fontsize=8)
    bar_ax.set_ylabel("cosine / Euclidean distance (unit-norm features)", fontsize=8)
    bar_ax.set_title("Diversity and distance to real data", fontsize=9)
    bar_ax.legend(fontsize=7)
    bar_ax.tick_params(axis="y", labelsize=7)
    bar_ax.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure, data
