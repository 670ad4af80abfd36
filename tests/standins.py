"""Small stand-ins for the real assets, in their real on-disk formats (built here: nothing is downloaded).

* :func:`openai_archive`: a TorchScript archive of a CLIP model in float16 with OpenAI's extra
  state entries (``input_resolution``, ``context_length``, ``vocab_size``), as ``clip.load`` reads it;
* :func:`model_cache`: a model cache folder holding such an archive under an OpenAI file name;
* :func:`cifar_root`: CIFAR-10 / CIFAR-100 python pickles with the real keys and dtypes (a handful
  of images each);
* :func:`imagenet_root`: an ImageNet root with torchvision's ``meta.bin`` and one image per synset
  in ``val/`` (and optionally ``train/``).
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from d4c.models.architectures import ClipArchitecture

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def openai_archive(path: Path, arch: ClipArchitecture, seed: int = 0) -> Path:
    """Write ``arch`` (random weights, ``seed``) as OpenAI does: a float16 TorchScript archive."""
    model = arch.build(seed=seed)
    for name, value in (("input_resolution", arch.image_resolution), ("context_length", arch.context_length),
                        ("vocab_size", arch.vocab_size)):
        if name in vars(model):
            delattr(model, name)  # a plain attribute in clip.model.CLIP, a state entry in OpenAI's archives
        model.register_buffer(name, torch.tensor(value))
    r = arch.image_resolution
    images, texts = torch.randn(1, 3, r, r), torch.zeros(1, arch.context_length, dtype=torch.long)
    texts[0, :3] = torch.tensor([49406, 320, 49407])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (images, texts), check_trace=False)
    traced.half()  # the weights are read from the archive's state dict, never run in half precision here
    path.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(path))
    return path


def model_cache(folder: Path, arch: ClipArchitecture, file_name: str = "ViT-B-32.pt") -> Path:
    """A model cache folder with a stand-in archive under an OpenAI file name (it fails the checksum)."""
    openai_archive(folder / file_name, arch)
    return folder


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, size=(n, 3072), dtype=np.uint8)


def cifar_root(root: Path, name: str = "cifar10", per_batch: int = 6, test: int = 12) -> Path:
    """CIFAR python pickles: ``data`` uint8 N x 3072, labels as a list of ints, the meta file's names."""
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(1, 6):
            _pickle(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5", "data": _images(per_batch, i),
                                                 "labels": [int(v) for v in np.arange(per_batch) % 10],
                                                 "filenames": [f"img_{i}_{j}.png" for j in range(per_batch)]})
        _pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "data": _images(test, 0),
                                        "labels": [int(v) for v in np.arange(test) % 10],
                                        "filenames": [f"test_{j}.png" for j in range(test)]})
        _pickle(folder / "batches.meta", {"label_names": CIFAR10_NAMES, "num_cases_per_batch": per_batch,
                                          "num_vis": 3072})
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True, exist_ok=True)
        for split, n, seed in (("train", 5 * per_batch, 1), ("test", test, 0)):
            _pickle(folder / split, {"batch_label": split, "data": _images(n, seed),
                                     "fine_labels": [int(v) for v in np.arange(n) % 100],
                                     "coarse_labels": [int(v) for v in np.arange(n) % 20],
                                     "filenames": [f"{split}_{j}.png" for j in range(n)]})
        _pickle(folder / "meta", {"fine_label_names": [f"class{i}" for i in range(100)],
                                  "coarse_label_names": [f"super{i}" for i in range(20)]})
    return root


def imagenet_root(root: Path, splits: tuple[str, ...] = ("val",), classes: int = 1000) -> Path:
    """``meta.bin`` as torchvision writes it, and one 8 x 8 image per synset in each split folder."""
    wnids = [f"n{i:08d}" for i in range(classes)]
    root.mkdir(parents=True, exist_ok=True)
    torch.save(({w: (f"class {i}",) for i, w in enumerate(wnids)}, wnids), root / "meta.bin")
    pixels = np.random.RandomState(0).randint(0, 256, size=(8, 8, 3), dtype=np.uint8)
    for split in splits:
        for w in wnids:
            (root / split / w).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / split / w / f"{w}_1.JPEG", format="JPEG")
    return root
