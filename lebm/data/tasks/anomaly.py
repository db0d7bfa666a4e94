"""MNIST anomaly detection with held-out digits (the MEG/BiGAN protocol the LEBM papers follow).

All available digits are pooled; the held-out digits are the anomalies. Training uses
``train_fraction`` (80%) of the normal digits; the test set is the remaining normal digits plus
*every* held-out digit. Both splits are fixed by ``seed``.

Pools:

- ``full``: MNIST's 60k training and 10k test images (IDX files under ``root``): the paper's setting.
- ``offline``: the 10k test images (IDX) plus ``mnist_5k.csv.gz`` (5,000 training digits), both
  under ``root`` — the 15,000 real digits available offline in this project (``$LEBM_DATA/mnist``).

Splits: training reads the train split; the test split is also what validation reads (the
protocol has no separate validation set). With ``val_fraction > 0`` a validation split is set
aside instead, for choosing settings without looking at the test split: that share of the
evaluation pool's normal digits and of its held-out digits (a stratified, seeded draw), sharing no
image with the test split, which keeps the rest.

Batches are ``(x, y)``: x float32 (B, channels, image_size, image_size) in [-1, 1] (default
(B, 1, 28, 28)), y the digit label (int64); anomaly callbacks read ``anomaly_classes`` from this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from lebm.data.datasets import InMemoryImages, ScaledImageSubset
from lebm.data.images.readers import read_mnist_csv, read_mnist_idx
from lebm.data.loaders import evaluation_loader, training_loader
from lebm.data.locate import locate_mnist_csv, locate_mnist_idx
from lebm.data.paths import expand_root
from lebm.data.transforms import convert_channels, resize_uint8

MNIST_SIZE = 28


def anomaly_split(
    labels: Tensor, anomaly_classes: Sequence[int], train_fraction: float, seed: int
) -> tuple[Tensor, Tensor]:
    """Indices ``(train, test)`` of the protocol: a seeded ``train_fraction`` of the normal
    examples for training; the other normal examples and all anomalous ones for testing."""
    is_anomaly = torch.isin(labels, torch.as_tensor(list(anomaly_classes), dtype=labels.dtype))
    normal = torch.nonzero(~is_anomaly).squeeze(1)
    order = normal[torch.randperm(len(normal), generator=torch.Generator().manual_seed(seed))]
    n_train = int(round(train_fraction * len(normal)))
    train = order[:n_train].sort().values
    test = torch.cat([order[n_train:], torch.nonzero(is_anomaly).squeeze(1)]).sort().values
    return train, test


def validation_split(
    labels: Tensor, evaluation: Tensor, anomaly_classes: Sequence[int], val_fraction: float, seed: int
) -> tuple[Tensor, Tensor]:
    """Indices ``(val, test)``: ``evaluation`` (indices into ``labels``) split into a seeded
    ``val_fraction`` of its normal and of its anomalous examples, and the rest; disjoint."""
    generator = torch.Generator().manual_seed(seed)
    is_anomaly = torch.isin(labels[evaluation], torch.as_tensor(list(anomaly_classes), dtype=labels.dtype))
    val, test = [], []
    for members in (evaluation[~is_anomaly], evaluation[is_anomaly]):
        order = members[torch.randperm(len(members), generator=generator)]
        n_val = int(round(val_fraction * len(members)))
        val.append(order[:n_val])
        test.append(order[n_val:])
    return torch.cat(val).sort().values, torch.cat(test).sort().values


class MNISTAnomalyDataModule(L.LightningDataModule):
    """MNIST with held-out digits as anomalies (see the module docstring for the protocol).

    The protocol has no separate validation split: validation runs on the test split, so that the
    AUPRC can be tracked per epoch and averaged over the last evaluations, as the papers report.
    ``val_fraction > 0`` sets a validation split aside (see the module docstring) for choosing
    settings; the test split is then read once, by ``lebm test``.

    Args:
        root: folder with the MNIST files (``$LEBM_DATA/mnist`` works).
        anomaly_classes: the held-out digit(s), e.g. ``[1]``.
        pool: ``full`` (70k IDX digits) or ``offline`` (10k test IDX + the 5k CSV).
        train_fraction: share of the normal digits used for training.
        val_fraction: share of the evaluation pool (normal and held-out digits alike) set aside as
            a validation split disjoint from the test split; 0 (the papers' protocol) validates on
            the test split.
        batch_size, eval_batch_size, num_workers: DataLoader settings.
        seed: fixes the splits.
        image_size: side of the square images served (28 = native; other sizes are resized,
            bilinear and antialiased), so a config can state the size once for data and model.
        channels: 1 (native grey) or 3 (grey repeated into RGB).

    Attributes:
        sample_shape: ``(channels, image_size, image_size)``, known at construction.
        train_dataset, val_dataset, test_dataset, val_labels, test_labels: set by :meth:`setup`
            (``val_*`` are the test split's when ``val_fraction`` is 0).
    """

    def __init__(
        self,
        root: str,
        anomaly_classes: Sequence[int] = (1,),
        pool: Literal["full", "offline"] = "full",
        train_fraction: float = 0.8,
        val_fraction: float = 0.0,
        batch_size: int = 100,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 1,
        image_size: int = MNIST_SIZE,
        channels: int = 1,
    ) -> None:
        super().__init__()
        if pool not in ("full", "offline"):
            raise ValueError(f"pool must be 'full' or 'offline', got {pool!r}")
        if not 0.0 < train_fraction < 1.0:
            raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(
                f"val_fraction must be in [0, 1) (the share of the evaluation pool set aside for validation), "
                f"got {val_fraction}"
            )
        self.val_fraction = float(val_fraction)
        self.anomaly_classes = [int(c) for c in anomaly_classes]
        if not self.anomaly_classes or not all(0 <= c <= 9 for c in self.anomaly_classes):
            raise ValueError(f"anomaly_classes must be digits 0-9, got {list(anomaly_classes)}")
        self.root = expand_root(root)
        self.pool = pool
        self.train_fraction, self.seed = train_fraction, seed
        self.batch_size, self.num_workers = batch_size, num_workers
        self.eval_batch_size = eval_batch_size or batch_size
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
        self.image_size, self.channels = image_size, channels
        self.sample_shape: tuple[int, int, int] = (channels, image_size, image_size)
        self._check_files()

    def _check_files(self) -> None:
        """Fail now (before a model is built) when the pool's files are missing."""
        locate_mnist_idx(self.root, "test")
        if self.pool == "full":
            locate_mnist_idx(self.root, "train")
        else:
            locate_mnist_csv(self.root)

    def _read_pool(self) -> tuple[Tensor, Tensor]:
        parts = [read_mnist_idx(self.root, "test")]
        if self.pool == "full":
            parts.append(read_mnist_idx(self.root, "train"))
        else:
            parts.append(read_mnist_csv(locate_mnist_csv(self.root)))
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_dataset"):
            return
        images, labels = self._read_pool()
        images = resize_uint8(convert_channels(images, self.channels), self.image_size)
        pool = InMemoryImages(images, labels)
        train, test = anomaly_split(labels, self.anomaly_classes, self.train_fraction, self.seed)
        val = test
        if self.val_fraction > 0:
            val, test = validation_split(labels, test, self.anomaly_classes, self.val_fraction, self.seed + 1)
        self.train_dataset = ScaledImageSubset(pool, train)
        self.val_dataset = ScaledImageSubset(pool, val)
        self.test_dataset = ScaledImageSubset(pool, test)
        self.val_labels, self.test_labels = labels[val], labels[test]

    def train_dataloader(self) -> DataLoader:
        return training_loader(self.train_dataset, self.batch_size, num_workers=self.num_workers, trainer=self.trainer)

    def val_dataloader(self) -> DataLoader:
        return evaluation_loader(self.val_dataset, self.eval_batch_size, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return evaluation_loader(self.test_dataset, self.eval_batch_size, num_workers=self.num_workers)
