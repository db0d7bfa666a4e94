"""The built-in datasets, each registered once here (importing ``lebm.data`` runs this module)."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from lebm.data.images.download import download_cifar10, download_fashion_mnist, download_mnist, download_svhn
from lebm.data.images.folder import CELEBA_CENTER_CROP, CELEBA_IMAGE_SIZE
from lebm.data.images.readers import (
    read_cifar10,
    read_digits,
    read_fashion_mnist,
    read_mnist_csv,
    read_mnist_idx,
    read_svhn,
)
from lebm.data.images.registry import DatasetSpec, register_dataset
from lebm.data.locate import (
    locate_celeba,
    locate_cifar10,
    locate_fashion_mnist,
    locate_image_folder,
    locate_mnist_csv,
    locate_mnist_idx,
    locate_svhn,
)


# Adapters for the locate/read functions that have no split argument (one file or one folder).
def _read_digits(root: Path | None, split: str) -> tuple[Tensor, Tensor]:
    return read_digits()


def _locate_mnist_csv(root: Path, split: str) -> Path:
    return locate_mnist_csv(root)


def _read_mnist_csv(root: Path | None, split: str) -> tuple[Tensor, Tensor]:
    assert root is not None
    return read_mnist_csv(locate_mnist_csv(root))


def _locate_celeba(root: Path, split: str) -> Path:
    return locate_celeba(root)


def _locate_image_folder(root: Path, split: str) -> Path:
    return locate_image_folder(root)


register_dataset(
    DatasetSpec(
        name="digits",
        title="scikit-learn digits",
        native_shape=(1, 8, 8),
        has_labels=True,
        official_test_split=False,
        read=_read_digits,
    )
)
register_dataset(
    DatasetSpec(
        name="mnist",
        title="MNIST",
        native_shape=(1, 28, 28),
        has_labels=True,
        official_test_split=True,
        locate=locate_mnist_idx,
        read=read_mnist_idx,
        download=download_mnist,
    )
)
register_dataset(
    DatasetSpec(
        name="mnist_csv",
        title="MNIST CSV",
        native_shape=(1, 28, 28),
        has_labels=True,
        official_test_split=False,
        locate=_locate_mnist_csv,
        read=_read_mnist_csv,
    )
)
register_dataset(
    DatasetSpec(
        name="fashion_mnist",
        title="Fashion-MNIST",
        native_shape=(1, 28, 28),
        has_labels=True,
        official_test_split=True,
        locate=locate_fashion_mnist,
        read=read_fashion_mnist,
        download=download_fashion_mnist,
    )
)
register_dataset(
    DatasetSpec(
        name="svhn",
        title="SVHN",
        native_shape=(3, 32, 32),
        has_labels=True,
        official_test_split=True,
        train_splits=("train", "extra"),
        locate=locate_svhn,
        read=read_svhn,
        download=download_svhn,
    )
)
register_dataset(
    DatasetSpec(
        name="cifar10",
        title="CIFAR-10",
        native_shape=(3, 32, 32),
        has_labels=True,
        official_test_split=True,
        locate=locate_cifar10,
        read=read_cifar10,
        download=download_cifar10,
    )
)
register_dataset(
    DatasetSpec(
        name="celeba",
        title="CelebA",
        native_shape=None,
        has_labels=False,
        official_test_split=False,
        locate=_locate_celeba,
        default_image_size=CELEBA_IMAGE_SIZE,
        default_center_crop=CELEBA_CENTER_CROP,
    )
)
register_dataset(
    DatasetSpec(
        name="folder",
        title="Image folder",
        native_shape=None,
        has_labels=False,
        official_test_split=False,
        locate=_locate_image_folder,
    )
)
