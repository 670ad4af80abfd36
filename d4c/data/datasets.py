"""Evaluation and calibration datasets by name.

``cifar10``, ``cifar100`` and ``imagenet1k`` come from ``clip_benchmark``'s ``build_dataset``
(its class names and zero-shot templates included), read from the dataset root; ``digits`` is
the offline dataset of :mod:`d4c.data.digits`. Before anything is read the root is checked, so a
missing or incomplete folder stops with one sentence describing the expected layout, and so does a
file whose content is not what the loader reads (:mod:`d4c.data.checks`). Files that
are present are never downloaded again; CIFAR is downloaded only into a root that has none of
its files and only when the network is allowed (``D4C_OFFLINE`` unset).
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from d4c.data import checks
from d4c.data.digits import DigitsDataset
from d4c.errors import D4CError
from d4c.runtime import offline

SPLITS = ("train", "test")

_CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                                         "data_batch_5", "test_batch", "batches.meta"]),
    "cifar100": ("cifar-100-python", ["train", "test", "meta"]),
}
# Per dataset: the data files of each split, the meta file, the label key, the class-name key, classes.
_CIFAR_CONTENT = {
    "cifar10": ({"train": ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"],
                 "test": ["test_batch"]}, "batches.meta", "labels", "label_names", 10),
    "cifar100": ({"train": ["train"], "test": ["test"]}, "meta", "fine_labels", "fine_label_names", 100),
}

DATASET_LAYOUTS = {
    "cifar10": "ROOT/cifar-10-batches-py/ holding data_batch_1..5, test_batch and batches.meta (the CIFAR-10 python version)",
    "cifar100": "ROOT/cifar-100-python/ holding train, test and meta (the CIFAR-100 python version)",
    "imagenet1k": "ROOT/meta.bin (or ILSVRC2012_devkit_t12.tar.gz) and ROOT/val/<wnid>/ (ROOT/train/<wnid>/ for the train split) class folders",
    "digits": "nothing: it ships with scikit-learn",
}

DATASET_NAMES = tuple(DATASET_LAYOUTS)


def _check_cifar(name: str, root: Path) -> bool:
    """Validate a CIFAR root; return True if its files are present, False if none are (download)."""
    folder, files = _CIFAR_FILES[name]
    missing = [f for f in files if not (root / folder / f).is_file()]
    if not missing:
        return True
    if len(missing) < len(files):
        raise D4CError(f"{root} is incomplete for {name} (missing {', '.join(missing)}): "
                       f"expected {DATASET_LAYOUTS[name].replace('ROOT', str(root))}.", "dataset_root")
    if offline():
        raise D4CError(f"{root} holds no {name} files and downloads are disabled (D4C_OFFLINE): "
                       f"expected {DATASET_LAYOUTS[name].replace('ROOT', str(root))}.", "dataset_root")
    return False


def _check_cifar_content(name: str, root: Path, split: str) -> None:
    """Read every pickle the split needs (one sentence for an unreadable or malformed one)."""
    folder, _ = _CIFAR_FILES[name]
    splits, meta, label_key, names_key, classes = _CIFAR_CONTENT[name]
    checks.check_cifar_meta(root, f"{folder}/{meta}", names_key, classes)
    for file in splits[split]:
        checks.check_cifar_batch(root, f"{folder}/{file}", label_key, classes)


def _cifar_md5_mismatches(name: str, root: Path) -> list[str]:
    """The files of ``root`` that differ from the official release (torchvision's MD5 list)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    base = root / cls.base_folder
    listed = [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])]
    return [file for file, md5 in listed if not checks.md5_matches(base / file, md5)]


@contextmanager
def _structure_checked_cifar():
    """torchvision's CIFAR readers without their MD5 gate (the files' structure has been checked)."""
    import torchvision.datasets.cifar as cifar

    original = cifar.check_integrity
    cifar.check_integrity = lambda fpath, md5=None: os.path.isfile(fpath)
    try:
        yield
    finally:
        cifar.check_integrity = original


def _check_imagenet(root: Path, split: str) -> None:
    folder = "train" if split == "train" else "val"
    has_meta = (root / "meta.bin").is_file() or (root / "ILSVRC2012_devkit_t12.tar.gz").is_file()
    split_dir = root / folder
    has_split = (split_dir.is_dir() and any(p.is_dir() for p in split_dir.iterdir())) or \
        (root / f"ILSVRC2012_img_{folder}.tar").is_file()
    if not (has_meta and has_split):
        what = "meta.bin" if not has_meta else f"{folder}/ class folders"
        raise D4CError(f"{root} is missing {what} for imagenet1k: expected "
                       f"{DATASET_LAYOUTS['imagenet1k'].replace('ROOT', str(root))}.", "dataset_root")
    checks.check_imagenet_root(root, folder)


def check_dataset(name: str, root: str | None, split: str) -> None:
    """Raise a one-sentence :class:`D4CError` unless ``name``/``root``/``split`` can be loaded."""
    if name not in DATASET_NAMES:
        raise D4CError(f"{name} is not supported; choose one of {', '.join(DATASET_NAMES)}.", "dataset")
    if split not in SPLITS:
        raise D4CError(f"Split {split!r} of {name} does not exist; choose train or test.")
    if name == "digits":
        return
    if not root:
        raise D4CError(f"is required for {name}: expected {DATASET_LAYOUTS[name]}.", "dataset_root")
    root_path = Path(root)
    if name in _CIFAR_FILES:
        if root_path.exists() and not root_path.is_dir():
            raise D4CError(f"{root} is a file, expected a folder with {DATASET_LAYOUTS[name]}.", "dataset_root")
        if _check_cifar(name, root_path):
            _check_cifar_content(name, root_path, split)
    elif name == "imagenet1k":
        if not root_path.is_dir():
            raise D4CError(f"{root} does not exist: expected {DATASET_LAYOUTS[name].replace('ROOT', root)}.",
                           "dataset_root")
        _check_imagenet(root_path, split)


def build_dataset(name: str, root: str | None, split: str, transform: Callable | None) -> Dataset:
    """The ``split`` of dataset ``name`` with ``classes`` and ``templates`` attributes."""
    check_dataset(name, root, split)
    if name == "digits":
        return DigitsDataset(split, transform)
    from clip_benchmark.datasets.builder import build_dataset as clip_benchmark_build

    download = name in _CIFAR_FILES and not _check_cifar(name, Path(root))
    unofficial = [] if download or name not in _CIFAR_FILES else _cifar_md5_mismatches(name, Path(root))
    if unofficial:
        warnings.warn(f"{name} in {root}: {', '.join(unofficial)} differ from the official release (MD5); their "
                      f"structure is valid, so they are used as they are.", stacklevel=2)
    try:
        with _structure_checked_cifar() if unofficial else nullcontext():
            return clip_benchmark_build(name, root=os.fspath(root), transform=transform, split=split,
                                        download=download)
    except (RuntimeError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        action = "could not be downloaded" if download else "could not be read"
        raise D4CError(f"{root}: {name} {action} ({reason}): expected "
                       f"{DATASET_LAYOUTS[name].replace('ROOT', str(root))}.", "dataset_root") from None


def sample_images(dataset: Dataset, count: int, seed: int, num_workers: int = 0) -> torch.Tensor:
    """``count`` distinct images of ``dataset`` drawn with ``seed`` (no replacement), as one ``[count, ...]`` tensor.

    Real-data calibration takes its images this way (docs/method.md, "Calibration").
    """
    if len(dataset) < count:
        raise ValueError(f"the dataset has {len(dataset)} images, fewer than {count}")
    indices = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count].tolist()
    loader = DataLoader(Subset(dataset, indices), batch_size=64, shuffle=False, num_workers=num_workers)
    return torch.cat([batch for batch, _ in loader])
