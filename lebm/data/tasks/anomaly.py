"""MNIST anomaly detection with held-out digits (the MEG/BiGAN protocol the LEBM papers follow).

All available digits are pooled; the held-out digits are the anomalies. Training uses
``train_fraction`` (80%) of the normal digits; the test set is the remaining normal digits plus
*every* held-out digit. Both splits are fixed by ``seed``.

Two ways to draw them (``split``):

- ``disjoint`` (the default): one permutation of the normal digits; no test digit is a training digit.
- ``cited``: the loader that MEG and BiGAN published and the LEBM papers cite draws a new permutation
  for the test split (:func:`cited_anomaly_split`), so about 80% of the test split's normal digits
  are training digits. The MEG and BiGAN-sigma rows of the papers' tables were measured that way;
  whether the EBM papers' own rows were is not stated. Its seed is the loader's 42 by default.

Pools:

- ``full``: MNIST's 60k training and 10k test images (IDX files under ``root``): the paper's setting.
- ``offline``: the 10k test images (IDX) plus ``mnist_5k.csv.gz`` (5,000 training digits), both
  under ``root`` — the 15,000 real digits available offline in this project (``$LEBM_DATA/mnist``).

Splits: training reads the train split. Validation reads a validation split set aside from the
evaluation pool (the normal digits training leaves and every held-out digit): ``val_fraction``
(20%) of its normal digits and of its held-out digits (a stratified, seeded draw), sharing no image
with the test split, which keeps the rest. ``val/*`` then never reads a test digit, so a
``ModelCheckpoint`` or ``EarlyStopping`` on ``val/auprc`` selects without looking at the test split,
which ``lebm test`` reads once. ``validate_on="test"`` is the papers' way instead: the
protocol has no validation set, validation reads the whole test split, and every selection on
``val/*`` (DAMC's official code keeps its best test reading) selects on the test split.

Batches are ``(x, y)``: x float32 (B, channels, image_size, image_size) in [-1, 1] (default
(B, 1, 28, 28)), y the digit label (int64); anomaly callbacks read ``anomaly_classes`` from this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from lebm import arguments
from lebm.data.content import ContentSources, located_files
from lebm.data.datasets import InMemoryImages, ScaledImageSubset
from lebm.data.images.readers import read_mnist_csv, read_mnist_idx
from lebm.data.loaders import evaluation_loader, training_loader
from lebm.data.locate import locate_mnist_csv, locate_mnist_idx
from lebm.data.paths import expand_root
from lebm.data.prediction import PredictionSource, check_predict_samples
from lebm.data.transforms import convert_channels, resize_uint8
from lebm.user_warnings import warn_user

MNIST_SIZE = 28
#: What ``val/*`` reads: a validation split apart from the test split, or the test split itself.
VALIDATE_ON = ("val", "test")
#: The share of the evaluation pool set aside for validation by default (``validate_on="val"``).
DEFAULT_VAL_FRACTION = 0.2
#: The largest validation share: the test split, which ``lebm test`` reads once, keeps at least as much.
MAX_VAL_FRACTION = 0.5


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


def cited_anomaly_split(
    labels: Tensor, anomaly_classes: Sequence[int], train_fraction: float, seed: int = 42
) -> tuple[Tensor, Tensor]:
    """Indices ``(train, test)`` as the loader the papers cite builds them (MEG, Kumar et al. 2019;
    BiGAN, Zenati et al. 2018): its test split's normal digits overlap its training split.

    That loader draws from one NumPy ``RandomState(seed)`` shared by two calls, one per split, each
    of which permutes the normal digits, keeps the first ``train_fraction`` for training and the
    rest (with every anomaly) for testing, then shuffles that test split. The training split comes
    from the first call, the test split from the second, whose permutation of the normal digits is
    a new draw: about ``train_fraction`` of its normal test digits are training digits. Replayed
    here on ``labels`` (N,) (whatever pool they index), training split first; the order of the
    test split, which a ranking metric ignores, is not kept (indices are sorted).
    """
    import numpy as np

    is_anomaly = torch.isin(labels, torch.as_tensor(list(anomaly_classes), dtype=labels.dtype)).numpy()
    normal, anomalous = np.flatnonzero(~is_anomaly), np.flatnonzero(is_anomaly)
    n_train = int(len(normal) * train_fraction)  # the loader truncates
    n_test = len(normal) - n_train + len(anomalous)
    generator = np.random.RandomState(seed)
    train = normal[generator.permutation(len(normal))[:n_train]]  # call 1: its training split
    generator.permutation(n_test)  # call 1 shuffles its own test split (discarded)
    test_normal = normal[generator.permutation(len(normal))[n_train:]]  # call 2: a new permutation
    test = np.concatenate([test_normal, anomalous])
    return torch.from_numpy(np.sort(train)), torch.from_numpy(np.sort(test))


def split_overlap(train: Tensor, test: Tensor) -> float:
    """The share of the test split's examples that are also in the training split (0 to 1)."""
    return float(torch.isin(test, train).double().mean()) if len(test) else 0.0


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


def subset_of(indices: Tensor, share: float, seed: int) -> Tensor:
    """A seeded ``share`` (0 < share <= 1) of ``indices``, sorted; all of them, unchanged, at 1."""
    if share >= 1.0:
        return indices
    n_kept = max(1, int(round(share * len(indices))))
    order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))
    return indices[order[:n_kept]].sort().values


class MNISTAnomalyDataModule(PredictionSource, L.LightningDataModule):
    """MNIST with held-out digits as anomalies (see the module docstring for the protocol).

    Validation reads a validation split disjoint from the test split (see the module docstring);
    the test split is read once, by ``lebm test``. ``validate_on="test"`` validates on the
    test split as the papers did (their protocol has no validation set).

    Args:
        root: folder with the MNIST files (``$LEBM_DATA/mnist`` works).
        anomaly_classes: the held-out digit(s), e.g. ``[1]``.
        pool: ``full`` (70k IDX digits) or ``offline`` (10k test IDX + the 5k CSV).
        split: ``disjoint`` (test digits are never training digits) or ``cited`` (the cited
            loader's draw, whose test split overlaps training; see the module docstring).
        train_fraction: share of the normal digits used for training.
        train_subset: share of that training split kept (a seeded draw, ``seed`` + 2), for measuring
            the metric against the training pool's size; 1 (the default) keeps all of it. The
            test and validation splits do not change.
        val_fraction: share of the evaluation pool (normal and held-out digits alike) set aside as
            a validation split disjoint from the test split, in (0, 0.5] (the test split is never the
            smaller: 0.999 would leave it a few images); unused with
            ``validate_on="test"``, which says so in one line for a share other than 0 and the default.
        validate_on: ``val`` (the default: ``val/*`` reads the validation split) or
            ``test`` (the papers' protocol: ``val/*`` reads the whole test split, so a
            selection on it selects on the test split; no validation split is set aside). None (the
            default): ``val``, or ``test`` with a line for ``val_fraction`` 0 (a config written
            before this option, when 0 meant the test split).
        batch_size: training batch size.
        eval_batch_size: validation and test batch size; None = ``batch_size``.
        num_workers: DataLoader worker processes.
        seed: fixes the splits (default: 1 for ``disjoint``, the cited loader's 42 for ``cited``).
        image_size: side of the square images served (28 = native; other sizes are resized,
            bilinear and antialiased), so a config can state the size once for data and model.
        channels: 1 (native grey) or 3 (grey repeated into RGB).
        predict_samples: what ``lebm predict`` reads: 0 (default) the test split; N > 0 requests for N
            generated samples (:class:`~lebm.data.prediction.PredictionSource`).

    Attributes:
        sample_shape: ``(channels, image_size, image_size)``, known at construction.
        train_dataset, val_dataset, test_dataset, val_labels, test_labels: set by :meth:`setup`
            (``val_*`` are the test split's with ``validate_on="test"``).
        test_overlap: set by :meth:`setup`: the share of the test split that is training digits
            (0 under ``disjoint``, about ``train_fraction`` x its normal share under ``cited``).
    """

    #: The settings that decide which digits each split holds: ``lebm test`` on a run's checkpoint
    #: refuses data that differ from the run's in one of them (``lebm.cli.data_match``).
    split_settings: ClassVar[tuple[str, ...]] = (
        "anomaly_classes",
        "pool",
        "split",
        "train_fraction",
        "train_subset",
        "val_fraction",
        "validate_on",
        "seed",
        "image_size",
        "channels",
    )

    @classmethod
    def normal_split_settings(cls, settings: dict[str, Any]) -> dict[str, Any]:
        """``settings`` (split settings, defaults filled in) with each value that means the same split
        as another written as that one (:func:`lebm.data.fingerprint.normal_settings`): ``seed``
        None as the seed it stands for (42 for the cited split, else 1), ``validate_on`` None as
        what :meth:`__init__` reads it as, and ``val_fraction`` as 0 where nothing is validated apart."""
        normal = dict(settings)
        if normal.get("seed") is None:
            normal["seed"] = 42 if normal.get("split") == "cited" else 1
        fraction = normal.get("val_fraction", DEFAULT_VAL_FRACTION)
        if normal.get("validate_on") is None:
            normal["validate_on"] = "test" if isinstance(fraction, (int, float)) and fraction == 0 else "val"
        if normal["validate_on"] == "test":
            normal["val_fraction"] = 0
        return normal

    def __init__(
        self,
        root: str,
        anomaly_classes: Sequence[int] = (1,),
        pool: Literal["full", "offline"] = "full",
        split: Literal["disjoint", "cited"] = "disjoint",
        train_fraction: float = 0.8,
        train_subset: float = 1.0,
        val_fraction: float = DEFAULT_VAL_FRACTION,
        validate_on: Literal["val", "test"] | None = None,
        batch_size: int = 100,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int | None = None,
        image_size: int = MNIST_SIZE,
        channels: int = 1,
        predict_samples: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # the arguments as given: the data fingerprint reads them
        self.predict_samples = check_predict_samples(predict_samples)
        if pool not in ("full", "offline"):
            raise ValueError(f"pool must be 'full' or 'offline', got {pool!r}")
        if split not in ("disjoint", "cited"):
            raise ValueError(
                f"split must be 'disjoint' (test digits are never training digits) or 'cited' (the cited loader's "
                f"overlapping draw), got {split!r}"
            )
        self.split = split
        for name, value in (("val_fraction", val_fraction), ("train_fraction", train_fraction)):
            arguments.number(type(self).__name__, name, value)  # a number first ('0.5' is named: no quotes)
        arguments.number(type(self).__name__, "train_subset", train_subset)
        if not 0.0 < train_fraction < 1.0:
            raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
        if not 0.0 < train_subset <= 1.0:
            raise ValueError(
                f"train_subset must be in (0, 1] (the share of training digits kept; 1 keeps all), got {train_subset}"
            )
        self.train_subset = float(train_subset)
        if validate_on is None:  # a config of before validate_on: val_fraction 0 read the test split
            validate_on = "test" if isinstance(val_fraction, (int, float)) and val_fraction == 0 else "val"
            if validate_on == "test":
                warn_user(
                    "MNISTAnomalyDataModule: val_fraction 0 sets no validation split aside, so val/* reads the test "
                    "split (validate_on: test, the papers' selection); give val_fraction > 0 to validate apart from it"
                )
        if validate_on not in VALIDATE_ON:
            raise ValueError(
                f"validate_on must be 'val' (val/* reads a split disjoint from the test split) or "
                f"'test' (the papers' protocol: val/* reads the test split), got {validate_on!r}"
            )
        self.validate_on = validate_on
        if validate_on == "val" and not 0.0 < val_fraction <= MAX_VAL_FRACTION:
            raise ValueError(
                f"val_fraction must be in (0, {MAX_VAL_FRACTION}] (the share of the evaluation pool set aside for "
                f"validation; the test split, which lebm test reads, keeps the rest and is never the smaller), got "
                f"{val_fraction}; the protocol's is {DEFAULT_VAL_FRACTION}. To validate on the test split as the "
                "papers did, set validate_on: test"
            )
        if validate_on == "test" and val_fraction not in (0, DEFAULT_VAL_FRACTION):
            warn_user(
                f"MNISTAnomalyDataModule: val_fraction {val_fraction} is unused: validate_on: test validates on the "
                f"whole test split and sets no validation split aside; drop val_fraction, or set validate_on: val to "
                f"validate on that share of the evaluation pool"
            )
        self.val_fraction = float(val_fraction) if validate_on == "val" else 0.0
        self.anomaly_classes = [int(c) for c in anomaly_classes]
        if not self.anomaly_classes or not all(0 <= c <= 9 for c in self.anomaly_classes):
            raise ValueError(f"anomaly_classes must be digits 0-9, got {list(anomaly_classes)}")
        self.root = expand_root(root)
        self.pool = pool
        self.train_fraction = train_fraction
        self.seed = (42 if split == "cited" else 1) if seed is None else int(seed)
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
            # the cited loader puts the training images first (its npz split them into train, test and
            # valid parts, an order not replayed here: the overlap is the same, the digits drawn differ)
            parts.insert(0 if self.split == "cited" else 1, read_mnist_idx(self.root, "train"))
        else:
            parts.append(read_mnist_csv(locate_mnist_csv(self.root)))
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_dataset"):
            return
        images, labels = self._read_pool()
        images = resize_uint8(convert_channels(images, self.channels), self.image_size)
        pool = InMemoryImages(images, labels)
        draw = cited_anomaly_split if self.split == "cited" else anomaly_split
        train, test = draw(labels, self.anomaly_classes, self.train_fraction, self.seed)
        train = subset_of(train, self.train_subset, self.seed + 2)
        val = test
        if self.val_fraction > 0:
            val, test = validation_split(labels, test, self.anomaly_classes, self.val_fraction, self.seed + 1)
        self.test_overlap = split_overlap(train, test)
        self.train_dataset = ScaledImageSubset(pool, train)
        self.val_dataset = ScaledImageSubset(pool, val)
        self.test_dataset = ScaledImageSubset(pool, test)
        self.val_labels, self.test_labels = labels[val], labels[test]
        self._pool_labels = labels

    def content_sources(self) -> ContentSources | None:
        """What the splits were read from (:mod:`lebm.data.content`): MNIST's files of the pool and
        the pool's labels, whole; None before :meth:`setup`."""
        if not hasattr(self, "train_dataset"):
            return None
        found: list[object] = [locate_mnist_idx(self.root, "test")]
        if self.pool == "full":
            found.append(locate_mnist_idx(self.root, "train"))
        else:
            found.append(locate_mnist_csv(self.root))
        return ContentSources(located_files(found), {"pool": self._pool_labels}, self.root)

    def train_dataloader(self) -> DataLoader:
        return training_loader(self.train_dataset, self.batch_size, num_workers=self.num_workers, trainer=self.trainer)

    def val_dataloader(self) -> DataLoader:
        return evaluation_loader(self.val_dataset, self.eval_batch_size, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return evaluation_loader(self.test_dataset, self.eval_batch_size, num_workers=self.num_workers)
