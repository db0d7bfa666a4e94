"""Read standard on-disk dataset formats into memory.

Every reader returns ``(images, labels)``:

* ``images``: ``torch.uint8`` tensor of shape (N, C, H, W), values 0..255;
* ``labels``: ``torch.int64`` tensor of shape (N,) (-1 where a format has no labels).

Missing files raise the ``FileNotFoundError`` built by :func:`lebm.data.errors.missing_data_error`.

The SVHN and CIFAR-10 readers are written by hand rather than wrapping torchvision's ``SVHN`` /
``CIFAR10`` classes: those verify the md5 sums of the official files, so the tests could not feed
them the small files they write in the same formats. torchvision is used only to download.
Large image collections (CelebA, arbitrary folders) are read lazily by
:class:`lebm.data.images.folder.ImageFolderDataset` instead.
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from lebm.data.errors import DataError
from lebm.data.images.download import download_cifar10, download_fashion_mnist, download_mnist, download_svhn
from lebm.data.images.idx import read_idx_file
from lebm.data.locate import locate_cifar10, locate_fashion_mnist, locate_mnist_csv, locate_mnist_idx, locate_svhn

MNIST_PIXELS = 28 * 28
Located = TypeVar("Located")


def _to_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[Tensor, Tensor]:
    """numpy (N, C, H, W) uint8 and (N,) integers -> torch uint8 / int64, contiguous."""
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    image_tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8))
    label_tensor = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
    return image_tensor, label_tensor


def _locate_or_download(
    locate: Callable[[Path | str, str], Located],
    fetch: Callable[[Path | str, str], None],
    root: Path | str,
    split: str,
    download: bool,
) -> Located:
    """Call ``locate(root, split)``; on a miss with ``download=True`` call ``fetch(root, split)`` and retry."""
    try:
        return locate(root, split)
    except FileNotFoundError:
        if not download:
            raise
    fetch(root, split)
    return locate(root, split)


def read_digits() -> tuple[Tensor, Tensor]:
    """scikit-learn's bundled 8x8 digits (1,797 images; no files needed).

    Returns:
        images (1797, 1, 8, 8) uint8 with the original 0..16 scale mapped to 0..255, labels (1797,).
    """
    from sklearn.datasets import load_digits  # imported lazily: scikit-learn is slow to import

    digits = load_digits()
    scaled = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return _to_tensors(scaled[:, None, :, :], digits.target)


def read_idx_pair(images_path: Path | str, labels_path: Path | str, title: str = "MNIST") -> tuple[Tensor, Tensor]:
    """One split of an MNIST-format dataset from its two IDX files (plain or ``.gz``).

    Args:
        images_path: IDX file of (N, H, W) uint8 images.
        labels_path: IDX file of (N,) labels.
        title: dataset name used in error messages.

    Returns:
        images (N, 1, H, W) uint8, labels (N,) int64.
    """
    images = read_idx_file(images_path)
    labels = read_idx_file(labels_path)
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(
            f"{title}: expected (N, H, W) images and (N,) labels, got {images.shape} in {images_path} "
            f"and {labels.shape} in {labels_path}"
        )
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{title}: {images_path} holds {images.shape[0]} images but {labels_path} {labels.shape[0]} labels: the "
            "two files belong to different copies, or one was cut short; fetch both files of the split again"
        )
    return _to_tensors(images[:, None, :, :], labels)


def read_mnist_idx(root: Path | str, split: str = "train", download: bool = False) -> tuple[Tensor, Tensor]:
    """MNIST from the official IDX files (plain or ``.gz``) in ``root/`` or ``root/MNIST/raw/``.

    Args:
        root: folder holding the files.
        split: "train" (60,000 images) or "test" (10,000 images, the ``t10k-*`` files).
        download: fetch the files with torchvision when they are missing (needs internet).

    Returns:
        images (N, 1, 28, 28) uint8, labels (N,) int64.
    """
    images_path, labels_path = _locate_or_download(locate_mnist_idx, download_mnist, root, split, download)
    return read_idx_pair(images_path, labels_path, "MNIST")


def read_fashion_mnist(root: Path | str, split: str = "train", download: bool = False) -> tuple[Tensor, Tensor]:
    """Fashion-MNIST (Zalando) from its IDX files in ``root/`` or ``root/FashionMNIST/raw/``.

    Same file names and format as MNIST (``train-*`` 60,000 images, ``t10k-*`` 10,000), labels
    0..9 are the clothing classes.

    Returns:
        images (N, 1, 28, 28) uint8, labels (N,) int64.
    """
    images_path, labels_path = _locate_or_download(locate_fashion_mnist, download_fashion_mnist, root, split, download)
    return read_idx_pair(images_path, labels_path, "Fashion-MNIST")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_mnist_csv(path: Path | str) -> tuple[Tensor, Tensor]:
    """MNIST rows from a CSV file (optionally ``.gz``): 784 pixel values 0..255, then the label.

    A header line is skipped when its first field is not a number.

    Returns:
        images (N, 1, 28, 28) uint8, labels (N,) int64.
    """
    path = Path(path)
    if not path.is_file():
        locate_mnist_csv(path)  # raises the standard FileNotFoundError
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        lines = [line for line in handle.read().splitlines() if line.strip()]
    if lines and not _is_number(lines[0].split(",")[0].strip()):
        lines = lines[1:]
    if not lines:
        raise ValueError(f"MNIST CSV: no data rows in {path}")
    table = np.loadtxt(lines, delimiter=",", dtype=np.float64, ndmin=2)
    if table.shape[1] != MNIST_PIXELS + 1:
        raise ValueError(
            f"MNIST CSV: expected {MNIST_PIXELS + 1} columns (pixels then label), got {table.shape[1]} in {path}"
        )
    if not np.all(table == np.rint(table)):
        raise ValueError(f"MNIST CSV: non-integer values in {path}")
    pixels, labels = table[:, :MNIST_PIXELS], table[:, MNIST_PIXELS]
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"MNIST CSV: pixel values outside 0..255 in {path}")
    images = pixels.astype(np.uint8).reshape(-1, 1, 28, 28)
    return _to_tensors(images, labels.astype(np.int64))


def read_svhn(root: Path | str, split: str = "train", download: bool = False) -> tuple[Tensor, Tensor]:
    """SVHN cropped digits from ``root/{split}_32x32.mat`` (split: "train", "test" or "extra").

    The file stores ``X`` as (32, 32, 3, N) uint8 and ``y`` as (N, 1) with label 10 for digit 0;
    labels are returned as digits 0..9.

    Returns:
        images (N, 3, 32, 32) uint8, labels (N,) int64.
    """
    from scipy.io import loadmat  # imported lazily: only needed for SVHN

    path = _locate_or_download(locate_svhn, download_svhn, root, split, download)
    content = loadmat(str(path))
    images = np.transpose(content["X"], (3, 2, 0, 1))  # (H, W, C, N) -> (N, C, H, W)
    labels = content["y"].reshape(-1).astype(np.int64)
    labels[labels == 10] = 0
    return _to_tensors(images, labels)


def read_cifar10(root: Path | str, split: str = "train", download: bool = False) -> tuple[Tensor, Tensor]:
    """CIFAR-10 from the python pickle batches in ``root/cifar-10-batches-py/`` (or ``root/``).

    "train" reads ``data_batch_1`` .. ``data_batch_5``, "test" reads ``test_batch``. Each batch
    is a pickled dict with ``b"data"`` (N, 3072) uint8 in row-major C, H, W order and ``b"labels"``.
    Only unpickle files from a source you trust.

    Returns:
        images (N, 3, 32, 32) uint8, labels (N,) int64.
    """
    paths = _locate_or_download(locate_cifar10, download_cifar10, root, split, download)
    image_parts, label_parts = [], []
    for path in paths:
        with open(path, "rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
        image_parts.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        label_parts.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return _to_tensors(np.concatenate(image_parts), np.concatenate(label_parts))
