"""Readers of the on-disk dataset formats, on tiny files written in those exact formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lebm.data import read_cifar10, read_digits, read_mnist_csv, read_mnist_idx, read_svhn
from lebm.data.images.idx import parse_idx, read_idx_file


# ------------------------------------------------------------------------------------------- IDX
@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trips_uint8_and_big_endian_int32(tmp_path: Path, idx_writer, compress: bool) -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(5, 3, 4), dtype=np.uint8)
    ints = np.array([1, -2, 70000, 2**31 - 1], dtype=np.int32)
    images_path = idx_writer(tmp_path / "images", images, compress)
    ints_path = idx_writer(tmp_path / "ints", ints, compress)
    np.testing.assert_array_equal(read_idx_file(images_path), images)
    np.testing.assert_array_equal(read_idx_file(ints_path), ints)  # would be garbled if read little-endian


def test_parse_idx_rejects_bad_magic_and_wrong_size() -> None:
    good = bytes([0, 0, 0x08, 1]) + np.array([3], dtype=">u4").tobytes() + bytes([1, 2, 3])
    assert parse_idx(good).tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="magic"):
        parse_idx(b"\x01" + good[1:])
    with pytest.raises(ValueError, match="bytes"):
        parse_idx(good + b"\x00")
    with pytest.raises(ValueError, match="type byte"):
        parse_idx(bytes([0, 0, 0x07]) + good[3:])


# ----------------------------------------------------------------------------------------- MNIST
@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_read_mnist_idx_round_trips(make_mnist_idx, compress: bool, layout: str, split: str) -> None:
    root, arrays = make_mnist_idx(n_train=30, n_test=12, compress=compress, layout=layout)
    images, labels = read_mnist_idx(root, split)
    expected_images, expected_labels = arrays[split]
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert images.shape == (len(expected_labels), 1, 28, 28)
    np.testing.assert_array_equal(images[:, 0].numpy(), expected_images)
    np.testing.assert_array_equal(labels.numpy(), expected_labels)


def test_read_mnist_idx_missing_files_names_paths_and_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        read_mnist_idx(tmp_path, "test")
    message = str(info.value)
    assert str(tmp_path / "t10k-images-idx3-ubyte.gz") in message
    assert str(tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte") in message
    assert "yann.lecun.com/exdb/mnist" in message and "download: true" in message


def test_read_mnist_idx_rejects_unknown_split(make_mnist_idx) -> None:
    root, _ = make_mnist_idx()
    with pytest.raises(ValueError, match="split"):
        read_mnist_idx(root, "validation")


@pytest.mark.parametrize("name,header", [("digits.csv", False), ("digits.csv.gz", True), ("digits.csv.gz", False)])
def test_read_mnist_csv_round_trips(tmp_path: Path, mnist_csv_writer, name: str, header: bool) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9, 2])
    path = mnist_csv_writer(tmp_path / name, images, labels, header=header)
    read_images, read_labels = read_mnist_csv(path)
    assert read_images.dtype == torch.uint8 and read_labels.dtype == torch.int64
    assert read_images.shape == (7, 1, 28, 28)
    np.testing.assert_array_equal(read_images[:, 0].numpy(), images)
    assert read_labels.tolist() == labels.tolist()


def test_read_mnist_csv_rejects_wrong_column_count(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(",".join(["0"] * 100) + "\n")
    with pytest.raises(ValueError, match="785 columns"):
        read_mnist_csv(path)


def test_read_mnist_csv_missing_file_names_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="mnist_missing.csv"):
        read_mnist_csv(tmp_path / "mnist_missing.csv")


# ------------------------------------------------------------------------------------------ SVHN
def test_read_svhn_transposes_and_maps_label_10_to_0(make_svhn) -> None:
    root, arrays = make_svhn({"train": 13, "test": 4})
    images, labels = read_svhn(root, "train")
    x, y = arrays["train"]
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert images.shape == (13, 3, 32, 32)
    np.testing.assert_array_equal(images.numpy(), np.transpose(x, (3, 2, 0, 1)))
    assert images[5, 2, 7, 11] == x[7, 11, 2, 5]  # (n, c, h, w) <- X[h, w, c, n]
    expected = y.reshape(-1).astype(np.int64) % 10
    assert labels.tolist() == expected.tolist()
    assert labels[9] == 0 and 10 not in labels.tolist()
    assert read_svhn(root, "test")[0].shape == (4, 3, 32, 32)


def test_read_svhn_missing_split_names_expected_file(make_svhn) -> None:
    root, _ = make_svhn({"train": 2})
    with pytest.raises(FileNotFoundError) as info:
        read_svhn(root, "extra")
    assert str(root / "extra_32x32.mat") in str(info.value)
    assert "ufldl.stanford.edu/housenumbers" in str(info.value)


# -------------------------------------------------------------------------------------- CIFAR-10
@pytest.mark.parametrize("inside_folder", [True, False])
def test_read_cifar10_concatenates_batches_in_order(make_cifar10, inside_folder: bool) -> None:
    root, batches = make_cifar10(per_batch=4, inside_folder=inside_folder)
    images, labels = read_cifar10(root, "train")
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert images.shape == (20, 3, 32, 32)
    expected = np.concatenate([batch[b"data"] for batch in batches["train"]])
    np.testing.assert_array_equal(images.reshape(20, -1).numpy(), expected)
    # row-major CHW: the first 1024 values are the red plane, stored row by row
    assert images[6, 0, 1, 2] == batches["train"][1][b"data"][2, 1 * 32 + 2]
    assert images[6, 2, 0, 0] == batches["train"][1][b"data"][2, 2048]
    assert labels.tolist() == sum((batch[b"labels"] for batch in batches["train"]), [])
    test_images, test_labels = read_cifar10(root, "test")
    assert test_images.shape == (4, 3, 32, 32) and test_labels.tolist() == batches["test"][0][b"labels"]


def test_read_cifar10_missing_batch_names_paths(make_cifar10) -> None:
    root, _ = make_cifar10()
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError) as info:
        read_cifar10(root, "train")
    assert str(root / "cifar-10-batches-py" / "data_batch_3") in str(info.value)
    assert read_cifar10(root, "test")[0].shape[0] == 4  # the test batch is still readable


# ---------------------------------------------------------------------------------------- digits
def test_read_digits_scales_0_16_to_0_255() -> None:
    from sklearn.datasets import load_digits

    images, labels = read_digits()
    raw = load_digits()
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert images.shape == (1797, 1, 8, 8)
    assert int(images.min()) == 0 and int(images.max()) == 255
    np.testing.assert_array_equal(images[:, 0].numpy(), np.rint(raw.images * 255 / 16).astype(np.uint8))
    assert labels.tolist() == raw.target.tolist()


def test_mnist_files_of_different_lengths_are_named_in_one_line(tmp_path: Path) -> None:
    """CPU. Images and labels of different counts (two copies mixed, or one cut short) are refused
    naming both files and the fix (a DataError: the command prints it as one line)."""
    from lebm.data.errors import DataError
    from lebm.data.images.readers import read_idx_pair
    from tests.helpers.dataset_files import write_idx

    images = write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((5, 28, 28), np.uint8), compress=False)
    labels = write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4, np.uint8), compress=False)
    with pytest.raises(DataError, match=r"holds 5 images but .*train-labels-idx1-ubyte 4 labels: .* fetch both"):
        read_idx_pair(images, labels)
