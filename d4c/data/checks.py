"""What can be checked in a dataset folder before any model is loaded: file contents, not just names.

* CIFAR-10/100 (the python versions): every pickle the split needs is read and must hold what
  torchvision reads from it (``data``: uint8 ``N x 3072``; ``labels`` / ``fine_labels``: ``N``
  integers in range; the meta file's label names). Files that differ from the official release's
  MD5 but have that structure (a stand-in, a re-packed copy) are used as they are, with a warning.
* ImageNet-1K: ``meta.bin`` must be torchvision's meta file (``(wnid_to_classes, val_wnids)``), or
  the devkit archive must pass its MD5; the split folder must hold one folder per synset of the
  meta file, each with at least one image file (clip_benchmark's 1000 class names follow the
  synsets' sorted order, so a partial folder would silently mislabel every image).

Each problem is one :class:`D4CError` sentence about the dataset root (parameter ``dataset_root``)
naming the file and what was expected.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from d4c.errors import D4CError

CIFAR_IMAGE_BYTES = 3 * 32 * 32
IMAGENET_CLASSES = 1000
DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
DEVKIT_MD5 = "fa75699e90414af021442c21a62c3abf"  # torchvision.datasets.imagenet.ARCHIVE_META["devkit"]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""torchvision.datasets.folder.IMG_EXTENSIONS (lower case; ImageFolder compares case-insensitively)."""


def _fail(root: Path, text: str) -> D4CError:
    return D4CError(f"{root}: {text}", "dataset_root")


def _unpickle(root: Path, name: str) -> Any:
    try:
        with open(root / name, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except Exception as exc:  # noqa: BLE001 - truncated, not a pickle, wrong protocol: one sentence
        raise _fail(root, f"{name} is not a readable CIFAR python pickle ({type(exc).__name__}): a partial or "
                          f"corrupted download? Replace it with the file from the CIFAR python archive.") from None


def check_cifar_batch(root: Path, name: str, label_key: str, num_classes: int) -> int:
    """Validate the CIFAR data pickle ``root/name``; return its number of images."""
    entry = _unpickle(root, name)
    if not isinstance(entry, dict):
        raise _fail(root, f"{name} holds a {type(entry).__name__}, expected the CIFAR dict with 'data' and "
                          f"'{label_key}'.")
    missing = [k for k in ("data", label_key) if k not in entry]
    if missing:
        raise _fail(root, f"{name} is not a CIFAR data pickle: it lacks the key '{missing[0]}' (expected 'data' "
                          f"and '{label_key}').")
    data, labels = entry["data"], entry[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR_IMAGE_BYTES:
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise _fail(root, f"{name}: 'data' must be a uint8 array of N x {CIFAR_IMAGE_BYTES} pixels, got {dtype} of "
                          f"shape {shape}.")
    labels = np.asarray(labels)
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise _fail(root, f"{name}: '{label_key}' must hold one integer label per image ({data.shape[0]}), got "
                          f"{labels.dtype} of shape {labels.shape}.")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise _fail(root, f"{name}: '{label_key}' must lie in 0..{num_classes - 1}, got "
                          f"{labels.min()}..{labels.max()}.")
    return int(data.shape[0])


def check_cifar_meta(root: Path, name: str, names_key: str, num_classes: int) -> None:
    """Validate the CIFAR meta pickle ``root/name`` (its class names)."""
    meta = _unpickle(root, name)
    names = meta.get(names_key) if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != num_classes:
        raise _fail(root, f"{name} is not the CIFAR meta file: expected '{names_key}' with {num_classes} class names.")


def md5_matches(path: Path, md5: str) -> bool:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest() == md5


def _load_imagenet_meta(root: Path) -> dict:
    import torch

    try:
        meta = torch.load(root / "meta.bin", map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - anything unreadable gets the same sentence
        raise _fail(root, f"meta.bin is not torchvision's ImageNet meta file (unreadable): delete it and "
                          f"place {DEVKIT} in the root, from which torchvision rebuilds it.") from None
    if not (isinstance(meta, (tuple, list)) and len(meta) == 2 and isinstance(meta[0], dict) and meta[0]
            and all(isinstance(k, str) for k in meta[0])):
        raise _fail(root, f"meta.bin is not torchvision's ImageNet meta file (expected (wnid_to_classes, "
                          f"val_wnids)): delete it and place {DEVKIT} in the root, from which torchvision rebuilds it.")
    return meta[0]


def check_imagenet_root(root: Path, folder: str) -> None:
    """Validate the meta file (or devkit) and the ``folder`` (train or val) class folders of an ImageNet root."""
    meta_file, devkit = root / "meta.bin", root / DEVKIT
    if meta_file.is_file():
        wnids = set(_load_imagenet_meta(root))
    elif devkit.is_file():
        if not md5_matches(devkit, DEVKIT_MD5):
            raise _fail(root, f"{DEVKIT} fails its MD5 checksum (torchvision verifies it before parsing): download it "
                              f"again, or place a meta.bin beside it.")
        wnids = None  # parsed by torchvision on first use
    else:
        return  # reported by the layout check
    split_dir = root / folder
    if not split_dir.is_dir():
        return  # the archive is unpacked by torchvision; the layout check has seen it
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if wnids is not None:
        unknown = [c for c in classes if c not in wnids]
        if unknown:
            raise _fail(root, f"{folder}/{unknown[0]} is not a synset of meta.bin ({len(unknown)} such "
                              f"folder{'s' if len(unknown) > 1 else ''}).")
    expected = len(wnids) if wnids is not None else IMAGENET_CLASSES
    if len(classes) != expected:
        raise _fail(root, f"{folder}/ holds {len(classes)} class folders, expected all {expected} ImageNet synsets (the "
                          f"zero-shot class names follow their sorted order).")
    for name in classes:
        with os.scandir(split_dir / name) as entries:  # lazy: stops at the first image
            has_image = any(e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS) for e in entries)
        if not has_image:
            raise _fail(root, f"class folder {folder}/{name} holds no image file ({', '.join(IMAGE_EXTENSIONS[:3])}, "
                              f"...).")
