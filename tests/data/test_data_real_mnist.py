"""Reads the real MNIST files from $LEBM_DATA/mnist when they are there (skipped otherwise)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lebm.data import ImageDataModule, read_mnist_csv, read_mnist_idx

pytestmark = pytest.mark.slow  # real data ($LEBM_DATA)

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def real_file(name: str) -> Path:
    """``$LEBM_DATA/mnist/<name>``, or skip the test saying what is missing."""
    data = os.environ.get("LEBM_DATA")
    if not data:
        pytest.skip("LEBM_DATA is not set (point it at the folder that holds mnist/)")
    path = Path(data).expanduser() / "mnist" / name
    if not path.is_file():
        pytest.skip(f"real data file {path} is absent")
    return path


def test_real_mnist_test_split_from_idx() -> None:
    real_file("t10k-images-idx3-ubyte.gz")
    labels_path = real_file("t10k-labels-idx1-ubyte.gz")
    images, labels = read_mnist_idx(labels_path.parent, "test")
    assert images.shape == (10000, 1, 28, 28) and images.dtype == torch.uint8
    assert torch.bincount(labels, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert int(images.max()) == 255 and int(images.min()) == 0
    assert 25 < images.float().mean().item() < 40  # MNIST mean intensity is about 33


def test_real_mnist_csv_through_the_data_module() -> None:
    path = real_file("mnist_5k.csv.gz")
    images, labels = read_mnist_csv(path)
    assert images.shape == (5000, 1, 28, 28)
    assert torch.bincount(labels, minlength=10).tolist() == [500] * 10
    module = ImageDataModule(
        "mnist_csv", root="$LEBM_DATA/mnist/mnist_5k.csv.gz", val_size=0.1, test_size=0.1, validate_on="val"
    )
    module.setup()
    assert (len(module.train_dataset), len(module.val_dataset), len(module.test_dataset)) == (4000, 500, 500)
