"""Fixtures that write tiny dataset files in the exact on-disk formats the readers expect."""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

IDX_TYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}


def write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    """Write ``array`` as an IDX file (big-endian header and values); ``.gz`` appended when compressing."""
    big_endian = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    header = bytes([0, 0, IDX_TYPE_CODES[big_endian.dtype], array.ndim])
    header += np.asarray(array.shape, dtype=">u4").tobytes()
    raw = header + big_endian.tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


def write_idx_splits(
    folder: Path, n_train: int, n_test: int, compress: bool, seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """MNIST-named IDX files (train-*, t10k-*) in ``folder``: random (N, 28, 28) uint8 images, labels 0..9 cycling."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    arrays = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, compress)
        arrays[split] = (images, labels)
    return arrays


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


def write_mnist_csv(path: Path, images: np.ndarray, labels: np.ndarray, header: bool) -> Path:
    """Rows of 784 pixel values then the label; gzip when the name ends in .gz."""
    lines = [",".join(f"p{i}" for i in range(784)) + ",label"] if header else []
    rows = zip(images, labels, strict=True)
    lines += [",".join(map(str, row.reshape(-1).tolist())) + f",{label}" for row, label in rows]
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


@pytest.fixture
def idx_writer() -> Callable[[Path, np.ndarray, bool], Path]:
    """The :func:`write_idx` helper, as a fixture (conftest modules are not imported by tests)."""
    return write_idx


@pytest.fixture
def mnist_csv_writer() -> Callable[[Path, np.ndarray, np.ndarray, bool], Path]:
    """The :func:`write_mnist_csv` helper, as a fixture."""
    return write_mnist_csv


@pytest.fixture
def make_svhn(tmp_path: Path) -> Callable[..., tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]]:
    """Factory: write ``{split}_32x32.mat`` files with X (32, 32, 3, N) uint8 and y (N, 1) in 1..10."""
    from scipy.io import savemat

    def make(splits: dict[str, int], seed: int = 0):
        rng = np.random.default_rng(seed)
        root = tmp_path / "svhn"
        root.mkdir(exist_ok=True)
        arrays = {}
        for split, n in splits.items():
            x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
            y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # 1..10, 10 = digit 0
            savemat(str(root / f"{split}_32x32.mat"), {"X": x, "y": y})
            arrays[split] = (x, y)
        return root, arrays

    return make


@pytest.fixture
def make_cifar10(tmp_path: Path) -> Callable[..., tuple[Path, dict[str, list[dict[bytes, object]]]]]:
    """Factory: write the six CIFAR-10 pickle batches (``per_batch`` rows each) and return them."""

    def make(per_batch: int = 4, inside_folder: bool = True, seed: int = 0):
        rng = np.random.default_rng(seed)
        root = tmp_path / f"cifar_{int(inside_folder)}"
        folder = root / "cifar-10-batches-py" if inside_folder else root
        folder.mkdir(parents=True)
        batches: dict[str, list[dict[bytes, object]]] = {"train": [], "test": []}
        names = [("train", f"data_batch_{i}") for i in range(1, 6)] + [("test", "test_batch")]
        for split, name in names:
            batch = {
                b"data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
                b"labels": rng.integers(0, 10, size=per_batch).tolist(),
                b"batch_label": name.encode(),
            }
            with open(folder / name, "wb") as handle:
                pickle.dump(batch, handle)
            batches[split].append(batch)
        return root, batches

    return make
