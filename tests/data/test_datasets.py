"""Dataset roots are checked before use; the offline digits split is fixed and disjoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from d4c.data.datasets import build_dataset, check_dataset, sample_images
from d4c.data.digits import DIGIT_CLASSNAMES, DigitsDataset, load_digits_split
from d4c.data.transforms import CLIP_MEAN, CLIP_STD, clip_transform, denormalize
from d4c.errors import D4CError


def test_digits_split_is_fixed_disjoint_and_complete():
    from sklearn.datasets import load_digits

    train_x, train_y = load_digits_split("train")
    test_x, test_y = load_digits_split("test")
    assert len(train_y) + len(test_y) == len(load_digits().target) == 1797
    assert len(test_y) == 539
    # Every class has about 30% of its images in the test split.
    for c in range(10):
        share = (test_y == c).sum() / ((test_y == c).sum() + (train_y == c).sum())
        assert 0.28 < share < 0.32
    # Disjoint and complete: train + test is the original set, as a multiset of (image, label).
    bunch = load_digits()
    original = sorted((np.round(x * 255 / 16).astype(np.uint8).tobytes(), int(y)) for x, y in zip(bunch.images, bunch.target))
    split = sorted((x.tobytes(), int(y)) for x, y in zip(np.concatenate([train_x, test_x]), np.concatenate([train_y, test_y])))
    assert split == original
    # Deterministic.
    again_x, again_y = load_digits_split("test")
    assert np.array_equal(again_x, test_x) and np.array_equal(again_y, test_y)
    assert train_x.dtype == np.uint8 and train_x.max() == 255


def test_digits_dataset_items_go_through_clip_preprocessing():
    ds = DigitsDataset("test", clip_transform(32))
    image, label = ds[0]
    assert image.shape == (3, 32, 32) and 0 <= label < 10
    assert ds.classes == DIGIT_CLASSNAMES and all("{c}" in t for t in ds.templates)
    # Background pixels are black: de-normalised, they are ~0 in every channel.
    assert denormalize(image[None])[0, :, 0, 0].abs().max() < 0.05


def test_denormalize_inverts_normalisation():
    x = torch.rand(2, 3, 4, 4)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(denormalize((x - mean) / std), x)


def test_unknown_dataset_lists_the_accepted_ones():
    with pytest.raises(D4CError, match="cifar10, cifar100, imagenet1k, digits"):
        check_dataset("mnist-but-typo", None, "test")


def test_unknown_split():
    with pytest.raises(D4CError, match="'validation'"):
        check_dataset("digits", None, "validation")


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "imagenet1k"])
def test_root_is_required(name):
    with pytest.raises(D4CError, match="dataset_root is required"):
        check_dataset(name, None, "test")


@pytest.mark.parametrize("name, marker", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_missing_cifar_root_describes_the_layout_offline(tmp_path, name, marker):
    with pytest.raises(D4CError) as err:
        check_dataset(name, str(tmp_path / "empty"), "test")
    assert marker in str(err.value) and "D4C_OFFLINE" in str(err.value)


def test_incomplete_cifar_root_names_the_missing_files(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ["data_batch_1", "data_batch_2", "batches.meta"]:
        (folder / name).write_bytes(b"x")
    with pytest.raises(D4CError, match="incomplete.*data_batch_3.*test_batch"):
        check_dataset("cifar10", str(tmp_path), "test")


def test_corrupted_cifar_files_are_reported_not_downloaded(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name in ["train", "test", "meta"]:
        (folder / name).write_bytes(b"not a pickle")
    with pytest.raises(D4CError, match="cifar-100-python/meta is not a readable CIFAR python pickle"):
        build_dataset("cifar100", str(tmp_path), "test", None)


def test_imagenet_layout_checks(tmp_path):
    with pytest.raises(D4CError, match="does not exist"):
        check_dataset("imagenet1k", str(tmp_path / "nope"), "test")
    (tmp_path / "val" / "n01440764").mkdir(parents=True)
    with pytest.raises(D4CError, match="missing meta.bin"):
        check_dataset("imagenet1k", str(tmp_path), "test")
    torch.save(({"n01440764": ("tench",)}, ["n01440764"]), tmp_path / "meta.bin")
    (tmp_path / "val" / "n01440764" / "a.JPEG").write_bytes(b"")
    check_dataset("imagenet1k", str(tmp_path), "test")  # val/ present: fine
    with pytest.raises(D4CError, match="missing train/ class folders"):
        check_dataset("imagenet1k", str(tmp_path), "train")


def test_sampled_images_are_distinct_seeded_members_of_the_dataset():
    train = build_dataset("digits", None, "train", clip_transform(32))
    images = sample_images(train, 20, seed=3)
    assert images.shape == (20, 3, 32, 32)
    pool = torch.stack([train[i][0] for i in range(len(train))]).flatten(1)
    matches = [torch.nonzero((pool == img.flatten()).all(1)).flatten().tolist() for img in images]
    assert all(matches) and len({m[0] for m in matches}) == 20
    assert torch.equal(images, sample_images(train, 20, seed=3))
    assert not torch.equal(images, sample_images(train, 20, seed=4))
    with pytest.raises(ValueError, match="fewer than"):
        sample_images(train, len(train) + 1, seed=0)
