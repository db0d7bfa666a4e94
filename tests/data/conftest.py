"""Fixtures that write tiny dataset files in the exact on-disk formats the readers expect."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.dataset_files import write_cifar10, write_idx, write_idx_splits, write_mnist_csv, write_svhn


@pytest.fixture
def make_mnist_idx(tmp_path: Path) -> Callable[..., tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]]:
    """Factory: write fake MNIST train/test IDX files and return ``(root, {split: (images, labels)})``.

    ``layout="flat"`` puts the files directly in root, ``"torchvision"`` in ``root/MNIST/raw``.
    Images are (N, 28, 28) uint8 with random values, labels cycle through 0..9.
    """

    def make(n_train: int = 60, n_test: int = 20, compress: bool = True, layout: str = "flat", seed: int = 0):
        root = tmp_path / f"mnist_{layout}_{int(compress)}"
        folder = root / "MNIST" / "raw" if layout == "torchvision" else root
        return root, write_idx_splits(folder, n_train, n_test, compress, seed)

    return make


@pytest.fixture
def make_fashion_mnist(tmp_path: Path) -> Callable[..., tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]]:
    """Factory like ``make_mnist_idx`` for Fashion-MNIST: same file names and format;
    ``layout="torchvision"`` puts them in ``root/FashionMNIST/raw``."""

    def make(n_train: int = 30, n_test: int = 10, compress: bool = True, layout: str = "flat", seed: int = 1):
        root = tmp_path / f"fashion_{layout}_{int(compress)}"
        folder = root / "FashionMNIST" / "raw" if layout == "torchvision" else root
        return root, write_idx_splits(folder, n_train, n_test, compress, seed)

    return make


@pytest.fixture
def idx_writer() -> Callable[[Path, np.ndarray, bool], Path]:
    """The :func:`write_idx` helper, as a fixture (from tests.helpers.dataset_files)."""
    return write_idx


@pytest.fixture
def mnist_csv_writer() -> Callable[[Path, np.ndarray, np.ndarray, bool], Path]:
    """The :func:`write_mnist_csv` helper, as a fixture."""
    return write_mnist_csv


@pytest.fixture
def make_svhn(tmp_path: Path) -> Callable[..., tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]]:
    """Factory: write ``{split}_32x32.mat`` files with X (32, 32, 3, N) uint8 and y (N, 1) in 1..10."""

    def make(splits: dict[str, int], seed: int = 0):
        root = tmp_path / "svhn"
        return root, write_svhn(root, splits, seed)

    return make


@pytest.fixture
def make_cifar10(tmp_path: Path) -> Callable[..., tuple[Path, dict[str, list[dict[bytes, object]]]]]:
    """Factory: write the six CIFAR-10 pickle batches (``per_batch`` rows each) and return them."""

    def make(per_batch: int = 4, inside_folder: bool = True, seed: int = 0):
        root = tmp_path / f"cifar_{int(inside_folder)}"
        folder = root / "cifar-10-batches-py" if inside_folder else root
        return root, write_cifar10(folder, per_batch, seed)

    return make
