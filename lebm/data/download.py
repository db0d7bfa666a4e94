"""Opt-in download of the standard datasets through torchvision (needs internet).

torchvision only fetches and unpacks the official files; the arrays are then read by
:mod:`lebm.data.readers`, so downloaded and hand-copied data go through the same code.
"""

from __future__ import annotations

from pathlib import Path

from lebm.data.locate import CELEBA_HOW_TO

DOWNLOADABLE = ("mnist", "svhn", "cifar10")


def download_with_torchvision(dataset: str, root: Path | str, split: str) -> None:
    """Fetch one split of ``dataset`` ("mnist", "svhn" or "cifar10") into ``root``.

    Resulting layouts, all understood by the readers: ``root/MNIST/raw/*-ubyte``,
    ``root/{split}_32x32.mat`` and ``root/cifar-10-batches-py/``.

    Raises:
        FileNotFoundError: for "celeba", which has to be downloaded by hand.
        ValueError: for any other dataset name.
    """
    import torchvision.datasets as tv_datasets  # imported lazily: only needed here

    root = Path(root)
    if dataset == "celeba":
        raise FileNotFoundError("CelebA: " + CELEBA_HOW_TO.format(root=root))
    if dataset not in DOWNLOADABLE:
        raise ValueError(f"cannot download {dataset!r}; downloadable datasets are {list(DOWNLOADABLE)}")
    root.mkdir(parents=True, exist_ok=True)
    if dataset == "mnist":
        tv_datasets.MNIST(str(root), train=(split == "train"), download=True)
    elif dataset == "svhn":
        tv_datasets.SVHN(str(root), split=split, download=True)
    else:
        tv_datasets.CIFAR10(str(root), train=(split == "train"), download=True)
