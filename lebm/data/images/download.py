"""Opt-in download of the standard datasets through torchvision (needs internet).

torchvision only fetches and unpacks the official files; the arrays are then read by
:mod:`lebm.data.images.readers`, so downloaded and hand-copied data go through the same code.
Each ``download_*`` function fetches one split into ``root``; the dataset registry
(:mod:`lebm.data.images.catalog`) names the one each dataset uses.
"""

from __future__ import annotations

from pathlib import Path

from lebm.data.images.registry import dataset_names, get_dataset_spec


def _prepared_root(root: Path | str) -> str:
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def download_mnist(root: Path | str, split: str) -> None:
    """MNIST IDX files into ``root/MNIST/raw/`` (split "train" or "test")."""
    import torchvision.datasets as tv_datasets  # imported lazily: only needed here

    tv_datasets.MNIST(_prepared_root(root), train=(split == "train"), download=True)


def download_fashion_mnist(root: Path | str, split: str) -> None:
    """Fashion-MNIST IDX files into ``root/FashionMNIST/raw/`` (split "train" or "test")."""
    import torchvision.datasets as tv_datasets

    tv_datasets.FashionMNIST(_prepared_root(root), train=(split == "train"), download=True)


def download_svhn(root: Path | str, split: str) -> None:
    """SVHN ``root/{split}_32x32.mat`` (split "train", "test" or "extra")."""
    import torchvision.datasets as tv_datasets

    tv_datasets.SVHN(_prepared_root(root), split=split, download=True)


def download_cifar10(root: Path | str, split: str) -> None:
    """CIFAR-10 python batches into ``root/cifar-10-batches-py/`` (one archive holds both splits)."""
    import torchvision.datasets as tv_datasets

    tv_datasets.CIFAR10(_prepared_root(root), train=(split == "train"), download=True)


def download_with_torchvision(dataset: str, root: Path | str, split: str) -> None:
    """Fetch one split of the registered ``dataset`` into ``root`` with its torchvision downloader.

    Raises:
        ValueError: unknown dataset, or one torchvision cannot fetch (the message lists those it can).
    """
    spec = get_dataset_spec(dataset)
    if spec.download is None:
        downloadable = [name for name in dataset_names() if get_dataset_spec(name).download is not None]
        raise ValueError(
            f"{spec.title} cannot be downloaded automatically; get the files by hand "
            f"(downloadable datasets: {', '.join(downloadable)})"
        )
    spec.download(Path(root), split)
