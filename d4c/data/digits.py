"""The offline evaluation dataset: scikit-learn's handwritten digits as RGB images.

scikit-learn ships 1,797 greyscale 8x8 digits (values 0..16). Each becomes an 8x8 RGB PIL image
(grey replicated to three channels, scaled to 0..255); the model's own preprocessing upsamples it
to the input resolution, exactly as for any other dataset.

The split is fixed and documented: within each class, the images are permuted with
``numpy.random.RandomState(class_index)`` and the first ``round(0.3 * n_class)`` form the test
split, the rest the train split (539 test and 1,258 train images). It does not depend on the
scikit-learn version's shuffling code.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from PIL import Image

DIGIT_CLASSNAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

# Captions used for training the zoo and as the zero-shot templates of the digits dataset.
DIGIT_TEMPLATES = [
    "a photo of the digit {c}.",
    "a handwritten digit {c}.",
    "the number {c}.",
    "a drawing of the digit {c}.",
    "a blurry photo of the number {c}.",
    "a scan of a handwritten {c}.",
    "a low resolution image of the digit {c}.",
    "a black and white photo of the number {c}.",
]

TEST_FRACTION = 0.3
SPLITS = ("train", "test")


def load_digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (``N x 8 x 8`` uint8, 0..255) and labels of the fixed ``train`` or ``test`` split."""
    from sklearn.datasets import load_digits

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    chosen = []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        idx = idx[np.random.RandomState(c).permutation(len(idx))]
        n_test = int(round(TEST_FRACTION * len(idx)))
        chosen.append(idx[:n_test] if split == "test" else idx[n_test:])
    order = np.sort(np.concatenate(chosen))
    return images[order], labels[order]


class DigitsDataset(torch.utils.data.Dataset):
    """Digits as a zero-shot classification dataset with ``classes`` and ``templates`` attributes."""

    def __init__(self, split: str = "test", transform: Callable | None = None):
        self.images, self.targets = load_digits_split(split)
        self.transform = transform
        self.classes = list(DIGIT_CLASSNAMES)
        self.templates = list(DIGIT_TEMPLATES)

    def __len__(self) -> int:
        return len(self.targets)

    def image(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index]).convert("RGB")

    def __getitem__(self, index: int):
        img = self.image(index)
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[index])
