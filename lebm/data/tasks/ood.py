"""Out-of-distribution (OOD) detection: train on one dataset, tell its test images from another's.

Protocol (Cui, Wu & Han, ICCV 2023, supplement: Fashion-MNIST in-distribution, MNIST out):

* **training** reads the WHOLE training split of ``in_dataset`` (e.g. the 60,000 Fashion-MNIST
  training images); nothing of ``out_dataset`` is ever trained on;
* **validation and test** read the same set: the official test split of ``in_dataset`` (label 0)
  followed by the official test split of ``out_dataset`` (label 1), e.g. 10,000 Fashion-MNIST then
  10,000 MNIST test images. ``anomaly_classes = [1]``, so :class:`lebm.callbacks.AnomalyDetection`
  reports the AUPRC/AUROC of the model's anomaly score with the out-of-distribution images as positives.

Both datasets are read by internal :class:`~lebm.data.images.datamodule.ImageDataModule` s (registry names,
file checks and their error messages, ``image_size`` resizing, ``channels`` conversion), and
must produce images of one shape: set ``image_size`` / ``channels`` to make them agree.

Batches are ``(x, y)``: x float32 (B, C, H, W) in [-1, 1], y int64 (B,): the training labels of
``in_dataset`` during training, 0 (in) / 1 (out) during validation and test.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from lebm.data.content import ContentSources, located_files
from lebm.data.datasets import ScaledImageSubset
from lebm.data.images.datamodule import ImageDataModule
from lebm.data.images.registry import dataset_names, get_dataset_spec
from lebm.data.loaders import evaluation_loader, training_loader
from lebm.data.prediction import PredictionSource, check_predict_samples

#: Label of in-distribution (0) and out-of-distribution (1) evaluation images.
IN_LABEL, OUT_LABEL = 0, 1


class _Relabelled(Dataset):
    """Items ``(x, label)`` of ``dataset`` with every label replaced by the constant ``label`` (int64)."""

    def __init__(self, dataset: Dataset, label: int) -> None:
        self.dataset = dataset
        self.label = torch.tensor(label, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.dataset[index][0], self.label


class OutOfDistributionDataModule(PredictionSource, L.LightningDataModule):
    """Train on ``in_dataset``; evaluate on its test split (y = 0) then ``out_dataset``'s (y = 1).

    See the module docstring for the protocol. Both datasets need an official test split (mnist,
    fashion_mnist, svhn, cifar10). The arguments and files are checked at construction, so a wrong
    config fails before a model is built; :meth:`setup` reads the data. The out-of-distribution
    folder is checked like any ``ImageDataModule``'s (for mnist: all four IDX files), though only
    its test split is read.

    Example: the data fragment ``recipes/data/fmnist_ood.yaml``, combined with a method and the
    anomaly evaluation (``val/auprc``, ``val/auroc`` with the out-of-distribution images as positives)::

        # a method recipe, e.g. recipes/latent_ebm/<your_run>.yaml (none ships yet)
        include: [../base.yaml, ../data/fmnist_ood.yaml, ../evaluation/anomaly.yaml, _method.yaml]

        # recipes/data/fmnist_ood.yaml
        data:
          class_path: lebm.data.OutOfDistributionDataModule
          init_args:
            in_dataset: fashion_mnist
            out_dataset: mnist
            root: null              # --data.init_args.root /path/to/fashion-mnist
            out_root: null          # --data.init_args.out_root /path/to/mnist
            image_size: 28
            channels: 1
            batch_size: 100

    Args:
        in_dataset: registered name of the in-distribution dataset (trained on, label 0).
        out_dataset: registered name of the out-of-distribution dataset (test split only, label 1).
        root: folder of the in-distribution files; ``$VARS`` and ``~`` are expanded.
        out_root: folder of the out-of-distribution files; None = ``root``. MNIST and
            Fashion-MNIST files carry the same names, so one folder only works with torchvision's
            layout (``root/MNIST/raw``, ``root/FashionMNIST/raw``); the same files for both sets
            are an error.
        batch_size: training batch size (the last partial batch is dropped).
        eval_batch_size: validation/test batch size; None = ``batch_size``.
        num_workers: DataLoader worker processes.
        image_size: resize both datasets to ``image_size`` x ``image_size``; None keeps the native sizes.
        channels: force 1 (grey) or 3 (RGB) channels on both; None keeps the native counts.
        seed: passed to the internal modules (no split is random: training is the whole training split).
        download: fetch missing files of both datasets with torchvision in :meth:`prepare_data`.
        out_limit: use only the first ``out_limit`` out-of-distribution test images; None = all.
        predict_samples: what ``lebm predict`` reads: 0 (default) the test split; N > 0 requests for N
            generated samples (:class:`~lebm.data.prediction.PredictionSource`).

    Attributes:
        anomaly_classes: ``[1]``, the label of the out-of-distribution images (read by
            :class:`~lebm.callbacks.AnomalyDetection`).
        sample_shape: (C, H, W) of one image, known at construction.
        in_data, out_data: the internal :class:`~lebm.data.images.datamodule.ImageDataModule` s.
        train_dataset: the whole training split of ``in_dataset``; set by :meth:`setup`.
        in_test_dataset, out_test_dataset: the two test splits (original labels); set by :meth:`setup`.
        test_dataset, val_dataset: both, in then out, labelled 0/1; set by :meth:`setup`.
        train_labels: the class labels of ``train_dataset``; test_labels, val_labels: the 0/1
            int64 labels of ``test_dataset``; set by :meth:`setup`.
    """

    #: The settings that decide which examples each split holds (``lebm.data.fingerprint``): a
    #: checkpoint keeps them, and a command that scores or resumes it on other ones refuses.
    split_settings: ClassVar[tuple[str, ...]] = (
        "in_dataset",
        "out_dataset",
        "image_size",
        "channels",
        "seed",
        "out_limit",
    )

    def __init__(
        self,
        in_dataset: str = "fashion_mnist",
        out_dataset: str = "mnist",
        root: str | None = None,
        out_root: str | None = None,
        batch_size: int = 100,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        image_size: int | None = None,
        channels: int | None = None,
        seed: int = 1,
        download: bool = False,
        out_limit: int | None = None,
        predict_samples: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.predict_samples = check_predict_samples(predict_samples)
        for role, name in (("in_dataset", in_dataset), ("out_dataset", out_dataset)):
            if not get_dataset_spec(name).official_test_split:
                valid = [n for n in dataset_names() if get_dataset_spec(n).official_test_split]
                raise ValueError(
                    f"{role}={name!r} has no official test split, which the OOD protocol evaluates on; "
                    f"use one of: {', '.join(valid)}"
                )
        if out_limit is not None and (isinstance(out_limit, bool) or not isinstance(out_limit, int) or out_limit <= 0):
            raise ValueError(f"out_limit must be a positive integer or None (all), got {out_limit!r}")
        self.in_dataset, self.out_dataset = in_dataset, out_dataset
        self.out_limit = out_limit
        self.download = download
        self.anomaly_classes = [OUT_LABEL]
        common = {
            "batch_size": batch_size,
            "eval_batch_size": eval_batch_size,
            "num_workers": num_workers,
            "image_size": image_size,
            "channels": channels,
            "val_size": 0,
            "validate_on": "test",
            "download": download,
            "seed": seed,
        }
        self.in_data = ImageDataModule(dataset=in_dataset, root=root, **common)
        self.out_data = ImageDataModule(dataset=out_dataset, root=root if out_root is None else out_root, **common)
        self.root: Path | None = self.in_data.root
        self.out_root: Path | None = self.out_data.root
        self.batch_size, self.eval_batch_size = self.in_data.batch_size, self.in_data.eval_batch_size
        self.num_workers = num_workers
        if self.in_data.sample_shape != self.out_data.sample_shape:
            raise ValueError(
                f"in_dataset {in_dataset!r} gives images of shape {self.in_data.sample_shape} but out_dataset "
                f"{out_dataset!r} gives {self.out_data.sample_shape} (C, H, W); both must match: set `channels` "
                "(1 or 3) and/or `image_size` so that they agree"
            )
        self.sample_shape: tuple[int, int, int] = self.in_data.sample_shape  # type: ignore[assignment]
        self._check_distinct_files()

        self.train_dataset: Dataset | None = None
        self.in_test_dataset: Dataset | None = None
        self.out_test_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.train_labels: Tensor | None = None
        self.test_labels: Tensor | None = None
        self.val_labels: Tensor | None = None

    def _check_distinct_files(self) -> None:
        """Fail when both test sets resolve to the same files (e.g. MNIST and Fashion-MNIST, which
        share file names, both flat in one folder): every image would then count as in and out."""
        if self.download:
            return  # the files may not exist yet
        in_spec, out_spec = get_dataset_spec(self.in_dataset), get_dataset_spec(self.out_dataset)
        assert in_spec.locate is not None and out_spec.locate is not None
        in_files = _resolved(in_spec.locate(self.root, "test"))  # type: ignore[arg-type]
        out_files = _resolved(out_spec.locate(self.out_root, "test"))  # type: ignore[arg-type]
        if in_files == out_files:
            raise ValueError(
                f"in_dataset {self.in_dataset!r} and out_dataset {self.out_dataset!r} would read the same test "
                f"files ({in_files}): put the out-of-distribution files in their own folder and pass it as "
                "`out_root` (CLI: --data.init_args.out_root /path)"
            )

    # ------------------------------------------------------------------------------ lightning
    def prepare_data(self) -> None:
        """Download missing files of both datasets when ``download=True``."""
        self.in_data.prepare_data()
        self.out_data.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        """Read the in-distribution splits and the out-of-distribution test split (idempotent)."""
        if self.train_dataset is not None:
            return
        self.in_data.setup()
        self.train_dataset, self.train_labels = self.in_data.train_dataset, self.in_data.train_labels
        self.in_test_dataset = self.in_data.test_dataset
        # only the test split of the out-of-distribution dataset is read (not its training split),
        # through ImageDataModule's reader, so channels and image_size are applied the same way
        out_images, _ = self.out_data.load_in_memory("test", apply_limit=False)
        n_out = len(out_images) if self.out_limit is None else min(self.out_limit, len(out_images))
        self.out_test_dataset = ScaledImageSubset(out_images, torch.arange(n_out))
        assert self.in_test_dataset is not None
        n_in = len(self.in_test_dataset)  # type: ignore[arg-type]
        self.test_dataset = ConcatDataset(
            [_Relabelled(self.in_test_dataset, IN_LABEL), _Relabelled(self.out_test_dataset, OUT_LABEL)]
        )
        self.test_labels = torch.cat(
            [torch.full((n_in,), IN_LABEL, dtype=torch.int64), torch.full((n_out,), OUT_LABEL, dtype=torch.int64)]
        )
        self.val_dataset, self.val_labels = self.test_dataset, self.test_labels

    def content_sources(self) -> ContentSources | None:
        """What the splits were read from (:mod:`lebm.data.content`): both datasets' files and the
        in-distribution splits' labels with the test split's in/out labels; None before :meth:`setup`."""
        inside = self.in_data.content_sources()
        if inside is None or self.test_labels is None:
            return None
        out_spec = get_dataset_spec(self.out_dataset)
        out_files = located_files(out_spec.locate(self.out_root, "test")) if out_spec.locate and self.out_root else []
        labels = {**{f"in {split}": labels for split, labels in inside.labels.items()}, "test": self.test_labels}
        return ContentSources(sorted({*inside.files, *out_files}), labels, self.root)

    # ---------------------------------------------------------------------------- dataloaders
    def train_dataloader(self) -> DataLoader:
        """Shuffled in-distribution training batches of exactly ``batch_size`` (seeded per epoch, resumable)."""
        self.setup()
        assert self.train_dataset is not None
        if len(self.train_dataset) < self.batch_size:  # type: ignore[arg-type]
            raise ValueError(
                f"batch_size={self.batch_size} exceeds the {len(self.train_dataset)} training images of "  # type: ignore[arg-type]
                f"{self.in_dataset!r}; with drop_last=True no batch would be produced"
            )
        return training_loader(
            self.train_dataset,
            self.batch_size,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            trainer=self.trainer,
        )

    def val_dataloader(self) -> DataLoader:
        """The in-distribution test images (y = 0) then the out-of-distribution ones (y = 1), in a fixed order."""
        return self.test_dataloader()

    def test_dataloader(self) -> DataLoader:
        """The in-distribution test images (y = 0) then the out-of-distribution ones (y = 1), in a fixed order."""
        self.setup()
        assert self.test_dataset is not None
        return evaluation_loader(
            self.test_dataset, self.eval_batch_size, num_workers=self.num_workers, pin_memory=torch.cuda.is_available()
        )


def _resolved(found: object) -> object:
    """What a ``locate`` function returned (a path or a sequence of paths), with every path made absolute."""
    if isinstance(found, (str, Path)):
        return Path(found).resolve()
    if isinstance(found, (list, tuple)):
        return tuple(_resolved(item) for item in found)
    return found
