"""``ImageDataModule``: every image dataset of the package behind one LightningDataModule.

Batches are tuples ``(x, y)``: ``x`` float32 (B, C, H, W) in [-1, 1], ``y`` int64 (B,) labels
(-1 for unlabelled image folders).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lebm.data.datasets import InMemoryImages, ScaledImageSubset
from lebm.data.download import DOWNLOADABLE, download_with_torchvision
from lebm.data.loaders import evaluation_loader, training_loader
from lebm.data.folder import CELEBA_CENTER_CROP, CELEBA_IMAGE_SIZE, ImageFolderDataset, celeba_dataset
from lebm.data.locate import (
    locate_celeba,
    locate_cifar10,
    locate_image_folder,
    locate_mnist_csv,
    locate_mnist_idx,
    locate_svhn,
)
from lebm.data.paths import expand_root
from lebm.data.readers import read_cifar10, read_digits, read_mnist_csv, read_mnist_idx, read_svhn
from lebm.data.splits import random_split_indices, resolve_count
from lebm.data.transforms import convert_channels, resize_uint8

DATASET_NAMES = ("digits", "mnist", "mnist_csv", "svhn", "cifar10", "celeba", "folder")
#: Datasets read lazily from image files (no labels, variable native size).
FOLDER_DATASETS = ("celeba", "folder")
#: Datasets that ship an official test split; the others carve their test set out of the pool.
OFFICIAL_TEST_SPLIT = ("mnist", "svhn", "cifar10")
#: Native (C, H, W) of the in-memory datasets.
NATIVE_SHAPES: dict[str, tuple[int, int, int]] = {
    "digits": (1, 8, 8),
    "mnist": (1, 28, 28),
    "mnist_csv": (1, 28, 28),
    "svhn": (3, 32, 32),
    "cifar10": (3, 32, 32),
}
TRAIN_SPLITS: dict[str, tuple[str, ...]] = {"svhn": ("train", "extra")}


class ImageDataModule(L.LightningDataModule):
    """Image datasets as float32 batches in [-1, 1], with deterministic train/val/test splits.

    The arguments are checked when the module is built, including a cheap look for the files,
    so a wrong config fails before a model is built; :meth:`setup` then reads the data.

    Args:
        dataset: one of ``digits`` (scikit-learn 8x8, no files), ``mnist`` (IDX files),
            ``mnist_csv``, ``svhn`` (.mat), ``cifar10`` (python pickles), ``celeba``
            (``img_align_celeba/``), ``folder`` (any folder of images).
        root: folder with the files (for ``mnist_csv`` also the CSV file itself); ``$VARS`` and
            ``~`` are expanded. Ignored by ``digits``.
        batch_size: training batch size (the training loader drops the last partial batch).
        eval_batch_size: validation/test batch size; None = ``batch_size``.
        num_workers: DataLoader worker processes (workers persist between epochs when > 0).
        image_size: resize to ``image_size`` x ``image_size``; None keeps the native size
            (CelebA: None means 64, as in the papers).
        channels: force 1 (grey) or 3 (RGB) channels; None keeps the native count.
        val_size: fraction (float in [0, 1)) or count (int) of the training pool held out for
            validation.
        test_size: same, for the test set of datasets without an official test split
            (digits, mnist_csv, celeba, folder); ignored for mnist, svhn, cifar10.
        exclude_classes: labels removed from the training and validation data only (e.g. a
            held-out anomaly digit); the test set keeps them.
        train_split: file split that forms the training pool ("train"; SVHN also "extra").
        limit: use only the first ``limit`` images of the training pool (quick runs; for CelebA
            ``limit=40000`` is the 40k subset).
        crop_box: ``(left, top, right, bottom)`` crop applied before resizing (celeba/folder).
        center_crop: side of a centred square crop applied before resizing (celeba/folder).
            CelebA uses 140 when neither ``crop_box`` nor ``center_crop`` is given; pass 0 to
            switch cropping off.
        random_flip: mirror training images left-right with probability 1/2.
        download: fetch missing mnist/svhn/cifar10 files with torchvision in ``prepare_data``
            (needs internet). CelebA must be downloaded by hand.
        seed: seed of the train/val/test split.

    Attributes:
        dataset_name: the ``dataset`` argument.
        root: expanded ``root`` (``Path``) or None.
        sample_shape: (C, H, W) of one image; known at construction when the arguments fix it,
            otherwise (folder without ``image_size``) set by :meth:`setup`.
        train_dataset, val_dataset, test_dataset: torch Datasets, set by :meth:`setup`.
        train_labels, val_labels, test_labels: int64 label tensors, None for unlabelled data.
    """

    def __init__(
        self,
        dataset: str = "digits",
        root: str | None = None,
        batch_size: int = 100,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        image_size: int | None = None,
        channels: int | None = None,
        val_size: float | int = 0.1,
        test_size: float | int = 0.1,
        exclude_classes: Sequence[int] = (),
        train_split: str = "train",
        limit: int | None = None,
        crop_box: tuple[int, int, int, int] | None = None,
        center_crop: int | None = None,
        random_flip: bool = False,
        download: bool = False,
        seed: int = 1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if dataset not in DATASET_NAMES:
            raise ValueError(f"unknown dataset {dataset!r}; valid names are: {', '.join(DATASET_NAMES)}")
        self.dataset_name = dataset
        self.root: Path | None = expand_root(root) if dataset != "digits" else None
        self.batch_size = _positive("batch_size", batch_size)
        self.eval_batch_size = _positive("eval_batch_size", batch_size if eval_batch_size is None else eval_batch_size)
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.num_workers = num_workers
        self.image_size = _positive("image_size", image_size) if image_size is not None else None
        if channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1, 3 or None (native), got {channels}")
        self.channels = channels
        self.val_size = val_size
        self.test_size = test_size
        resolve_count(val_size, 10**12, "val_size")  # type/range check only
        resolve_count(test_size, 10**12, "test_size")
        self.exclude_classes = [int(label) for label in exclude_classes]
        if self.exclude_classes and dataset in FOLDER_DATASETS:
            raise ValueError(f"exclude_classes needs labels, but dataset {dataset!r} has none")
        valid_splits = TRAIN_SPLITS.get(dataset, ("train",))
        if train_split not in valid_splits:
            raise ValueError(f"train_split {train_split!r} is not valid for {dataset!r}; valid: {list(valid_splits)}")
        self.train_split = train_split
        self.limit = _positive("limit", limit) if limit is not None else None
        self.crop_box, self.center_crop = self._crop_settings(crop_box, center_crop)
        self.random_flip = random_flip
        self.download = download
        self.seed = seed

        self.sample_shape: tuple[int, int, int] | None = self._expected_sample_shape()
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None
        self.train_labels: Tensor | None = None
        self.val_labels: Tensor | None = None
        self.test_labels: Tensor | None = None
        self._check_files()

    # ----------------------------------------------------------------------------------- checks
    def _crop_settings(
        self, crop_box: Sequence[int] | None, center_crop: int | None
    ) -> tuple[tuple[int, int, int, int] | None, int | None]:
        """Validate the crop options and apply the CelebA default (140 centre crop)."""
        if self.dataset_name not in FOLDER_DATASETS:
            if crop_box is not None or center_crop:
                raise ValueError(
                    f"crop_box/center_crop only apply to datasets {FOLDER_DATASETS}, not {self.dataset_name!r}"
                )
            return None, None
        if crop_box is not None:
            if len(crop_box) != 4:
                raise ValueError(f"crop_box must be (left, top, right, bottom), got {crop_box}")
            left, top, right, bottom = (int(v) for v in crop_box)
            if right <= left or bottom <= top:
                raise ValueError(f"crop_box {crop_box} is empty: need left < right and top < bottom")
            crop_box = (left, top, right, bottom)
        if center_crop is not None and center_crop < 0:
            raise ValueError(f"center_crop must be positive (or 0 for no crop), got {center_crop}")
        if self.dataset_name == "celeba" and crop_box is None and center_crop is None:
            center_crop = CELEBA_CENTER_CROP
        return crop_box, (center_crop or None)  # type: ignore[return-value]

    def _expected_sample_shape(self) -> tuple[int, int, int] | None:
        """(C, H, W) implied by the arguments alone, or None when only the files can tell."""
        if self.dataset_name in NATIVE_SHAPES:
            channels, height, width = NATIVE_SHAPES[self.dataset_name]
            channels = self.channels or channels
            if self.image_size is not None:
                height = width = self.image_size
            return channels, height, width
        channels = self.channels or 3
        size = self._folder_image_size() or self.center_crop
        if size is not None:
            return channels, size, size
        if self.crop_box is not None:
            left, top, right, bottom = self.crop_box
            return channels, bottom - top, right - left
        return None

    def _folder_image_size(self) -> int | None:
        if self.dataset_name == "celeba" and self.image_size is None:
            return CELEBA_IMAGE_SIZE
        return self.image_size

    def _needed_splits(self) -> list[str]:
        return [self.train_split, "test"] if self.dataset_name in OFFICIAL_TEST_SPLIT else [self.train_split]

    def _locate(self, split: str) -> object:
        """Find the files of one split (raises ``FileNotFoundError`` naming the expected paths)."""
        root = self.root
        assert root is not None
        name = self.dataset_name
        if name == "mnist":
            return locate_mnist_idx(root, split)
        if name == "svhn":
            return locate_svhn(root, split)
        if name == "cifar10":
            return locate_cifar10(root, split)
        if name == "mnist_csv":
            return locate_mnist_csv(root)
        if name == "celeba":
            return locate_celeba(root)
        return locate_image_folder(root)

    def _missing_splits(self) -> list[str]:
        missing = []
        for split in self._needed_splits():
            try:
                self._locate(split)
            except FileNotFoundError:
                missing.append(split)
        return missing

    def _check_files(self) -> None:
        """Fail early: no root for a file-based dataset, or files missing and no download asked."""
        if self.dataset_name == "digits":
            return
        if self.root is None:
            raise ValueError(
                f"dataset {self.dataset_name!r} reads files from disk but no root was given: pass "
                "`--data.init_args.root /path` on the command line or set `root:` under `data.init_args` "
                "in the config (environment variables such as $LEBM_DATA are expanded)"
            )
        if self.download and self.dataset_name in DOWNLOADABLE:
            return  # prepare_data() fetches whatever is missing
        for split in self._needed_splits():
            self._locate(split)

    # ------------------------------------------------------------------------------ lightning
    def prepare_data(self) -> None:
        """Download missing mnist/svhn/cifar10 files when ``download=True`` (runs on one process only)."""
        if not self.download or self.dataset_name not in DOWNLOADABLE:
            return
        assert self.root is not None
        for split in self._missing_splits():
            download_with_torchvision(self.dataset_name, self.root, split)

    def setup(self, stage: str | None = None) -> None:
        """Read the data and build the three splits (idempotent: a second call does nothing)."""
        if self.train_dataset is not None:
            return
        pool, pool_labels = self._load_pool()
        has_test_split = self.dataset_name in OFFICIAL_TEST_SPLIT
        total = len(pool)
        n_val = resolve_count(self.val_size, total, "val_size")
        n_test = 0 if has_test_split else resolve_count(self.test_size, total, "test_size")
        val_idx, test_idx, train_idx = random_split_indices(total, [n_val, n_test], self.seed)
        if self.exclude_classes and pool_labels is not None:
            excluded = torch.tensor(self.exclude_classes, dtype=torch.int64)
            train_idx = train_idx[~torch.isin(pool_labels[train_idx], excluded)]
            val_idx = val_idx[~torch.isin(pool_labels[val_idx], excluded)]
        if train_idx.numel() == 0:
            raise ValueError(
                f"the training split is empty ({total} images in the pool, val_size={self.val_size}, "
                f"test_size={self.test_size}, exclude_classes={self.exclude_classes})"
            )

        if has_test_split:
            test_source, test_labels = self._load_in_memory("test", apply_limit=False)
            test_idx = torch.arange(len(test_source))
        else:
            test_source, test_labels = pool, pool_labels

        self.train_dataset = ScaledImageSubset(pool, train_idx, random_flip=self.random_flip)
        self.val_dataset = ScaledImageSubset(pool, val_idx)
        self.test_dataset = ScaledImageSubset(test_source, test_idx)
        if pool_labels is not None:
            self.train_labels = pool_labels[train_idx]
            self.val_labels = pool_labels[val_idx]
        if test_labels is not None:
            self.test_labels = test_labels[test_idx]
        self.sample_shape = tuple(pool[0][0].shape)  # type: ignore[assignment]

    # -------------------------------------------------------------------------------- loading
    def _load_pool(self) -> tuple[Dataset, Tensor | None]:
        """The training pool (before the val/test split) and its labels (None when unlabelled)."""
        if self.dataset_name in FOLDER_DATASETS:
            return self._load_folder(), None
        return self._load_in_memory(self.train_split, apply_limit=True)

    def _load_folder(self) -> ImageFolderDataset:
        assert self.root is not None
        options = dict(
            image_size=self._folder_image_size(),
            channels=self.channels or 3,
            crop_box=self.crop_box,
            center_crop=self.center_crop,
            limit=self.limit,
        )
        if self.dataset_name == "celeba":
            return celeba_dataset(self.root, **options)  # type: ignore[arg-type]
        return ImageFolderDataset(self.root, **options)  # type: ignore[arg-type]

    def _load_in_memory(self, split: str, apply_limit: bool) -> tuple[InMemoryImages, Tensor]:
        """Read one split into memory, then apply ``limit``, ``channels`` and ``image_size`` once."""
        images, labels = self._read(split)
        if apply_limit and self.limit is not None:
            images, labels = images[: self.limit], labels[: self.limit]
        if self.channels is not None:
            images = convert_channels(images, self.channels)
        if self.image_size is not None:
            images = resize_uint8(images, self.image_size)
        return InMemoryImages(images, labels), labels

    def _read(self, split: str) -> tuple[Tensor, Tensor]:
        name, root = self.dataset_name, self.root
        if name == "digits":
            return read_digits()
        assert root is not None
        if name == "mnist":
            return read_mnist_idx(root, split)
        if name == "mnist_csv":
            return read_mnist_csv(locate_mnist_csv(root))
        if name == "svhn":
            return read_svhn(root, split)
        return read_cifar10(root, split)

    # ---------------------------------------------------------------------------- dataloaders
    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches of exactly ``batch_size`` (the last partial batch is dropped);
        the order of each epoch depends only on the run's seed and the epoch (exact resume)."""
        self.setup()
        assert self.train_dataset is not None
        if len(self.train_dataset) < self.batch_size:
            raise ValueError(
                f"batch_size={self.batch_size} exceeds the {len(self.train_dataset)} training images; "
                "with drop_last=True no batch would be produced"
            )
        return self._make_loader(self.train_dataset, self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order."""
        self.setup()
        return self._make_loader(self.val_dataset, self.eval_batch_size, train=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in a fixed order."""
        self.setup()
        return self._make_loader(self.test_dataset, self.eval_batch_size, train=False)

    def _make_loader(self, dataset: Dataset | None, batch_size: int, train: bool) -> DataLoader:
        assert dataset is not None
        make = training_loader if train else evaluation_loader
        return make(dataset, batch_size, num_workers=self.num_workers, pin_memory=torch.cuda.is_available())


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value
