"""The papers' data protocol: whole training split, validation on the test split, folder limits,
``resize_shorter_side``, and ``sample_shape`` on every DataModule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lebm.data import ImageDataModule, MixtureDataModule, MNISTAnomalyDataModule
from lebm.data.transforms import from_signed_unit


def all_batches(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat([torch.as_tensor(y) for y in ys])


# ----------------------------------------------------------------------- whole training split
def test_svhn_trains_on_the_whole_file_and_validates_on_test(make_svhn) -> None:
    root, arrays = make_svhn({"train": 23, "test": 7})
    module = ImageDataModule("svhn", root=str(root), batch_size=5)
    module.setup()
    assert len(module.train_dataset) == 23 and len(module.holdout_dataset) == 0
    assert module.train_dataset.indices.tolist() == list(range(23))
    val_x, val_y = all_batches(module.val_dataloader())
    test_x, test_y = all_batches(module.test_dataloader())
    assert torch.equal(val_x, test_x) and torch.equal(val_y, test_y) and len(val_x) == 7
    expected = np.transpose(arrays["test"][0], (3, 2, 0, 1))  # the test file's images, in order
    np.testing.assert_array_equal(from_signed_unit(val_x).numpy(), expected)


def test_cifar10_trains_on_all_five_batches(make_cifar10) -> None:
    root, batches = make_cifar10(per_batch=5)
    module = ImageDataModule("cifar10", root=str(root), batch_size=5)
    module.setup()
    assert len(module.train_dataset) == 25 and len(module.test_dataset) == 5
    assert module.val_labels.tolist() == batches["test"][0][b"labels"]


# ------------------------------------------------------------------------------ validate_on
def test_validate_on_val_needs_a_carve_out() -> None:
    with pytest.raises(ValueError) as info:
        ImageDataModule("digits", validate_on="val")
    message = str(info.value)
    assert "val_size" in message and "validate_on='test'" in message and "validate_on='val'" in message
    with pytest.raises(ValueError, match="'test' or 'val'"):
        ImageDataModule("digits", validate_on="train")


def test_validate_on_val_reads_the_carve_out(make_svhn) -> None:
    root, _ = make_svhn({"train": 20, "test": 6})
    module = ImageDataModule("svhn", root=str(root), val_size=5, validate_on="val", batch_size=5)
    module.setup()
    assert len(module.train_dataset) == 15 and len(module.val_dataset) == 5 and len(module.test_dataset) == 6
    assert not set(module.train_dataset.indices.tolist()) & set(module.val_dataset.indices.tolist())
    val_x, _ = all_batches(module.val_dataloader())
    pool = module.train_dataset.source
    expected = torch.stack([pool[int(i)][0] for i in module.val_dataset.indices])
    np.testing.assert_array_equal(from_signed_unit(val_x).numpy(), expected.numpy())


def test_unused_carve_out_is_warned_about() -> None:
    with pytest.warns(UserWarning, match="used by neither"):
        ImageDataModule("digits", val_size=0.1)


# --------------------------------------------------------------------- folder limit protocol
def write_numbered_images(folder: Path, count: int) -> None:
    """``count`` 6x4 PNGs named 00.png.. whose every pixel is 10 * index (so each item names its file)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.fromarray(np.full((4, 6, 3), 10 * index, dtype=np.uint8)).save(folder / f"{index:02d}.png")


def file_numbers(dataset) -> list[int]:
    """The file index each item came from, read back from its pixel value."""
    return sorted(int(from_signed_unit(dataset[i][0])[0, 0, 0]) // 10 for i in range(len(dataset)))


def test_folder_limit_trains_on_the_first_files_and_tests_on_the_next(tmp_path: Path) -> None:
    write_numbered_images(tmp_path, 12)
    module = ImageDataModule("folder", root=str(tmp_path), limit=5, test_size=3, batch_size=5)
    module.setup()
    assert file_numbers(module.train_dataset) == [0, 1, 2, 3, 4]
    assert file_numbers(module.test_dataset) == [5, 6, 7]
    assert file_numbers(module.val_dataset) == [5, 6, 7]


def test_folder_limit_fractional_test_size_is_a_share_of_the_limit(tmp_path: Path) -> None:
    write_numbered_images(tmp_path / "img_align_celeba", 12)
    module = ImageDataModule(
        "celeba", root=str(tmp_path), limit=5, test_size=0.4, center_crop=0, image_size=4, batch_size=5
    )
    module.setup()
    assert file_numbers(module.train_dataset) == [0, 1, 2, 3, 4]
    assert file_numbers(module.test_dataset) == [5, 6]


def test_folder_limit_with_carve_out_keeps_within_the_limit(tmp_path: Path) -> None:
    write_numbered_images(tmp_path, 12)
    module = ImageDataModule("folder", root=str(tmp_path), limit=8, test_size=2, val_size=3, validate_on="val")
    module.setup()
    train, val = file_numbers(module.train_dataset), file_numbers(module.val_dataset)
    assert len(train) == 5 and len(val) == 3 and sorted(train + val) == list(range(8))
    assert file_numbers(module.test_dataset) == [8, 9]


def test_folder_limit_without_enough_files_says_how_many(tmp_path: Path) -> None:
    write_numbered_images(tmp_path, 12)
    module = ImageDataModule("folder", root=str(tmp_path), limit=10, test_size=3)
    with pytest.raises(ValueError) as info:
        module.setup()
    assert "13" in str(info.value) and "only 12" in str(info.value)


def test_folder_without_limit_holds_out_a_random_test_set(tmp_path: Path) -> None:
    write_numbered_images(tmp_path, 20)
    module = ImageDataModule("folder", root=str(tmp_path), test_size=4, batch_size=4)
    module.setup()
    train, test = file_numbers(module.train_dataset), file_numbers(module.test_dataset)
    assert len(test) == 4 and sorted(train + test) == list(range(20)) and test != [16, 17, 18, 19]


# ------------------------------------------------------------------------- resize_shorter_side
def test_resize_shorter_side_then_center_crop_in_the_module(tmp_path: Path) -> None:
    columns = np.arange(80)[None, :].repeat(40, axis=0)
    pixels = np.stack([3 * columns, 0 * columns + 50, 0 * columns], -1).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    module = ImageDataModule(
        "folder", root=str(tmp_path), resize_shorter_side=20, center_crop=20, image_size=20, test_size=0, batch_size=1
    )
    assert module.sample_shape == (3, 20, 20)
    module.setup()
    red = from_signed_unit(module.train_dataset[0][0])[0].double()
    expected = torch.tensor(3 * (2 * (10 + np.arange(20)) + 0.5))  # the middle 20 columns of the 40x20 resize
    assert (red - expected[None, :]).abs().max() <= 1.0


def test_resize_shorter_side_replaces_the_celeba_140_default(tmp_path: Path) -> None:
    write_numbered_images(tmp_path / "img_align_celeba", 3)
    module = ImageDataModule("celeba", root=str(tmp_path), resize_shorter_side=32, image_size=16)
    assert module.center_crop == 32 and module.sample_shape == (3, 16, 16)
    assert ImageDataModule("celeba", root=str(tmp_path)).center_crop == 140
    uncropped = ImageDataModule("folder", root=str(tmp_path), resize_shorter_side=8, center_crop=0)
    assert uncropped.center_crop is None and uncropped.sample_shape is None
    with pytest.raises(ValueError, match="resize_shorter_side"):
        ImageDataModule("digits", resize_shorter_side=8)


# ------------------------------------------------------------------------------ sample_shape
def test_every_datamodule_states_its_sample_shape(make_mnist_idx, make_svhn) -> None:
    assert ImageDataModule("digits").sample_shape == (1, 8, 8)
    assert ImageDataModule("digits", image_size=12, channels=3).sample_shape == (3, 12, 12)
    svhn_root, _ = make_svhn({"train": 2, "test": 2})
    assert ImageDataModule("svhn", root=str(svhn_root), channels=1).sample_shape == (1, 32, 32)
    mnist_root, _ = make_mnist_idx(n_train=10, n_test=10)
    assert MNISTAnomalyDataModule(str(mnist_root)).sample_shape == (1, 28, 28)
    assert MNISTAnomalyDataModule(str(mnist_root), image_size=32, channels=3).sample_shape == (3, 32, 32)
    assert MixtureDataModule(dim=5).sample_shape == (5,)
