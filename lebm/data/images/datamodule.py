"""``ImageDataModule``: every registered image dataset behind one LightningDataModule.

Data protocol (the one of the papers' official scripts):

* **training** uses the whole training split (``train_split``); nothing is carved out of it
  unless ``val_size > 0``;
* **validation** (``val_dataloader``) reads the test set by default (``validate_on="test"``);
  ``validate_on="val"`` reads instead the ``val_size`` images carved out of the training pool;
* the **test set** is the official test split where the files ship one (mnist, fashion_mnist,
  svhn, cifar10). Otherwise (digits, mnist_csv, celeba, folder) it is ``test_size`` images held out
  of the pool at random, except for image folders with ``limit``: training is then exactly the
  first ``limit`` files (sorted order) and the test set the ``test_size`` files that follow them.

Batches are tuples ``(x, y)``: ``x`` float32 (B, C, H, W) in [-1, 1], ``y`` int64 (B,) labels
(-1 for unlabelled image folders). Datasets are looked up in :mod:`lebm.data.images.registry`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lebm.data.content import ContentSources, located_files
from lebm.data.datasets import InMemoryImages, ScaledImageSubset
from lebm.data.errors import DataError
from lebm.data.images import catalog  # noqa: F401 (registers the built-in datasets)
from lebm.data.images.folder import ImageFolderDataset, list_image_files
from lebm.data.images.folder_preprocess import FolderPreprocess
from lebm.data.images.registry import dataset_names, get_dataset_spec
from lebm.data.loaders import evaluation_loader, training_loader
from lebm.data.paths import expand_root
from lebm.data.prediction import PredictionSource, check_predict_samples
from lebm.data.splits import random_split_indices, resolve_count
from lebm.data.transforms import convert_channels, resize_uint8

#: Names of the datasets registered when ``lebm.data`` is imported (``dataset_names()`` is the
#: live list, including datasets registered later).
DATASET_NAMES = dataset_names()
VALIDATE_ON = ("test", "val")


class ImageDataModule(PredictionSource, L.LightningDataModule):
    """Image datasets as float32 batches in [-1, 1], with deterministic train/val/test splits.

    See the module docstring for which split trains, validates and tests. The arguments are
    checked when the module is built, including a cheap look for the files, so a wrong config
    fails before a model is built; :meth:`setup` then reads the data.

    Image folders (celeba, folder) are preprocessed per image in this order: convert to RGB/grey
    (``channels``) -> ``crop_box`` -> ``resize_shorter_side`` -> ``center_crop`` -> resize to
    ``image_size`` x ``image_size`` (resizes bilinear, antialiased; see
    :mod:`lebm.data.images.folder_preprocess`).

    Args:
        dataset: a registered name: ``digits`` (scikit-learn 8x8, no files), ``mnist`` (IDX
            files), ``mnist_csv``, ``fashion_mnist`` (IDX files), ``svhn`` (.mat), ``cifar10``
            (python pickles), ``celeba`` (``img_align_celeba/``), ``folder`` (any folder of images).
        root: folder with the files (for ``mnist_csv`` also the CSV file itself); ``$VARS`` and
            ``~`` are expanded. Ignored by ``digits``.
        batch_size: training batch size (the training loader drops the last partial batch).
        eval_batch_size: validation/test batch size; None = ``batch_size``.
        num_workers: DataLoader worker processes (workers persist between epochs when > 0).
        image_size: resize to ``image_size`` x ``image_size``; None keeps the native size
            (CelebA: None means 64, as in the papers).
        channels: force 1 (grey) or 3 (RGB) channels; None keeps the native count.
        val_size: fraction (float in [0, 1)) or count (int) of the training pool carved out as a
            validation set; 0 (default) trains on the whole training split.
        test_size: size of the test set of datasets without an official test split (digits,
            mnist_csv, celeba, folder): a fraction of the pool or a count; with ``limit`` on an
            image folder, a count or a fraction of ``limit`` (the files after the first ``limit``).
            Ignored for mnist, fashion_mnist, svhn, cifar10.
        exclude_classes: labels removed from the training and validation carve-out only (e.g. a
            held-out anomaly digit); the test set keeps them.
        train_split: file split that forms the training pool ("train"; SVHN also "extra").
        limit: use only the first ``limit`` images of the training pool (quick runs; for CelebA
            ``limit=40000`` is the 40k subset, all of it used for training).
        crop_box: ``(left, top, right, bottom)`` crop applied first (celeba/folder).
        center_crop: side of a centred square crop (celeba/folder). Defaults: CelebA uses 140
            when no ``crop_box``, ``center_crop`` or ``resize_shorter_side`` is given; with
            ``resize_shorter_side`` and no ``center_crop`` the crop is ``resize_shorter_side``
            (torchvision's ``Resize(s)`` + ``CenterCrop(s)``). Pass 0 to switch cropping off.
        random_flip: mirror training images left-right with probability 1/2, drawn from the run's
            seed, the epoch and the image (not torch's global RNG; see
            :class:`~lebm.data.datasets.ScaledImageSubset`).
        download: fetch missing files with torchvision in ``prepare_data`` (needs internet;
            mnist, fashion_mnist, svhn, cifar10). CelebA must be downloaded by hand.
        seed: seed of the train/val/test split.
        validate_on: "test" (default) or "val": the set ``val_dataloader`` reads. "val" needs
            ``val_size > 0``.
        resize_shorter_side: celeba/folder only: resize so the shorter side has this many pixels
            (aspect ratio kept), after ``crop_box`` and before ``center_crop``. The official LEBM
            CelebA-128 protocol is ``resize_shorter_side: 128, center_crop: 128, image_size: 128``.
        predict_samples: what ``lebm predict`` reads: 0 (default) the test split; N > 0 requests for N
            generated samples (:class:`~lebm.data.prediction.PredictionSource`).
        skip_unreadable: celeba/folder only: leave out image files that cannot be read (not an image,
            empty, cut short, no permission), counted in a warning, instead of stopping with an error
            that names them. :meth:`setup` reads every used file's header (cheap), so most are found
            before training; a file broken only further in is found when loaded, and the next
            readable file of the folder serves in its place
            (:class:`~lebm.data.images.folder.ImageFolderDataset`).

    Attributes:
        dataset_name: the ``dataset`` argument; ``spec`` its :class:`~lebm.data.images.registry.DatasetSpec`.
        root: expanded ``root`` (``Path``) or None.
        sample_shape: (C, H, W) of one image; known at construction when the arguments fix it,
            otherwise (folder without ``image_size``) set by :meth:`setup`.
        train_dataset, test_dataset: torch Datasets, set by :meth:`setup`.
        holdout_dataset: the ``val_size`` carve-out (empty when ``val_size`` is 0).
        skipped_files: the unreadable image files left out by ``skip_unreadable`` (set by
            :meth:`setup`), as ``(path, reason)``.
        val_dataset: what ``val_dataloader`` reads: ``test_dataset`` or ``holdout_dataset``.
        train_labels, val_labels, holdout_labels, test_labels: int64 label tensors, None for
            unlabelled data.
    """

    #: The settings that decide which examples each split holds (``lebm.data.fingerprint``): a
    #: checkpoint keeps them, and a command that scores or resumes it on other ones refuses.
    split_settings: ClassVar[tuple[str, ...]] = (
        "dataset",
        "image_size",
        "channels",
        "val_size",
        "test_size",
        "exclude_classes",
        "train_split",
        "limit",
        "crop_box",
        "center_crop",
        "seed",
        "validate_on",
        "resize_shorter_side",
    )

    def __init__(
        self,
        dataset: str = "digits",
        root: str | None = None,
        batch_size: int = 100,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        image_size: int | None = None,
        channels: int | None = None,
        val_size: int | float = 0,  # int first: the parser tries a union's types in order, and float
        test_size: int | float = 0.1,  # first would read the count 10000 as the fraction 10000.0
        exclude_classes: Sequence[int] = (),
        train_split: str = "train",
        limit: int | None = None,
        crop_box: tuple[int, int, int, int] | None = None,
        center_crop: int | None = None,
        random_flip: bool = False,
        download: bool = False,
        seed: int = 1,
        validate_on: Literal["test", "val"] = "test",
        resize_shorter_side: int | None = None,
        predict_samples: int = 0,
        skip_unreadable: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.predict_samples = check_predict_samples(predict_samples)
        self.spec = get_dataset_spec(dataset)
        self.dataset_name = dataset
        self.root: Path | None = expand_root(root) if self.spec.needs_files else None
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
        self.validate_on = self._check_validate_on(validate_on, val_size)
        self.exclude_classes = [int(label) for label in exclude_classes]
        if self.exclude_classes and not self.spec.has_labels:
            raise ValueError(f"exclude_classes needs labels, but dataset {dataset!r} has none")
        if train_split not in self.spec.train_splits:
            raise ValueError(
                f"train_split {train_split!r} is not valid for {dataset!r}; valid: {list(self.spec.train_splits)}"
            )
        self.train_split = train_split
        self.limit = _positive("limit", limit) if limit is not None else None
        self.preprocess = self._folder_preprocess(crop_box, center_crop, resize_shorter_side)
        self.crop_box = self.preprocess.crop_box if self.preprocess else None
        self.center_crop = self.preprocess.center_crop if self.preprocess else None
        self.resize_shorter_side = self.preprocess.resize_shorter_side if self.preprocess else None
        self.skip_unreadable = self._check_skip_unreadable(skip_unreadable)
        self.skipped_files: list[tuple[Path, str]] = []
        self.random_flip = random_flip
        self.download = download
        self.seed = seed

        self.sample_shape: tuple[int, int, int] | None = self._expected_sample_shape()
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.holdout_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None
        self.train_labels: Tensor | None = None
        self.val_labels: Tensor | None = None
        self.holdout_labels: Tensor | None = None
        self.test_labels: Tensor | None = None
        self._pool_dataset: Dataset | None = None
        self._check_files()

    # ----------------------------------------------------------------------------------- checks
    @staticmethod
    def _check_validate_on(validate_on: str, val_size: int | float) -> str:
        if validate_on not in VALIDATE_ON:
            raise ValueError(f"validate_on must be 'test' or 'val', got {validate_on!r}")
        if validate_on == "val" and val_size == 0:
            raise ValueError(
                "validate_on='val' reads a validation set carved out of the training split, but val_size=0 "
                "carves none: pass val_size > 0 (e.g. 0.1) to carve one, or validate_on='test' to validate "
                "on the test set (the papers' protocol)"
            )
        if validate_on == "test" and val_size != 0:
            warnings.warn(
                f"val_size={val_size} holds images out of training, but validate_on='test' validates on the "
                "test set, so they are used by neither; pass val_size=0 to train on them or validate_on='val' "
                "to validate on them",
                UserWarning,
                stacklevel=3,
            )
        return validate_on

    def _folder_preprocess(
        self, crop_box: Sequence[int] | None, center_crop: int | None, resize_shorter_side: int | None
    ) -> FolderPreprocess | None:
        """The per-image preprocessing of folder datasets, with their defaults; None for the others."""
        if not self.spec.is_folder:
            if crop_box is not None or center_crop or resize_shorter_side is not None:
                folders = [name for name in dataset_names() if get_dataset_spec(name).is_folder]
                raise ValueError(
                    f"crop_box/center_crop/resize_shorter_side only apply to the image-folder datasets "
                    f"({', '.join(folders)}), not {self.dataset_name!r}; remove them from the config"
                )
            return None
        if center_crop is not None and center_crop < 0:
            raise ValueError(f"center_crop must be positive (or 0 for no crop), got {center_crop}")
        if center_crop is None:
            if resize_shorter_side is not None:
                center_crop = resize_shorter_side
            elif crop_box is None:
                center_crop = self.spec.default_center_crop
        return FolderPreprocess(
            channels=self.channels or 3,
            crop_box=tuple(crop_box) if crop_box is not None else None,  # type: ignore[arg-type]
            resize_shorter_side=resize_shorter_side,
            center_crop=center_crop or None,
            image_size=self.image_size or self.spec.default_image_size,
        )

    def _check_skip_unreadable(self, skip_unreadable: bool) -> bool:
        if skip_unreadable and not self.spec.is_folder:
            folders = [name for name in dataset_names() if get_dataset_spec(name).is_folder]
            raise ValueError(
                f"skip_unreadable only applies to the image-folder datasets ({', '.join(folders)}), not "
                f"{self.dataset_name!r}, whose files are read whole (a corrupt one is named when read); remove it"
            )
        return bool(skip_unreadable)

    def _expected_sample_shape(self) -> tuple[int, int, int] | None:
        """(C, H, W) implied by the arguments alone, or None when only the files can tell."""
        if self.preprocess is None:
            assert self.spec.native_shape is not None
            channels, height, width = self.spec.native_shape
            channels = self.channels or channels
            if self.image_size is not None:
                height = width = self.image_size
            return channels, height, width
        size = self.preprocess.output_size(None)
        if size is None:
            return None
        return self.preprocess.channels, size[1], size[0]

    def _missing_splits(self) -> list[str]:
        missing = []
        assert self.spec.locate is not None and self.root is not None
        for split in self.spec.required_splits(self.train_split):
            try:
                self.spec.locate(self.root, split)
            except FileNotFoundError:
                missing.append(split)
        return missing

    def _check_files(self) -> None:
        """Fail early: no root for a file-based dataset, or files missing and no download asked."""
        if not self.spec.needs_files:
            return
        if self.root is None:
            raise ValueError(
                f"dataset {self.dataset_name!r} reads files from disk but no root was given: pass "
                "`--data.init_args.root /path` on the command line or set `root:` under `data.init_args` "
                "in the config (environment variables such as $LEBM_DATA are expanded)"
            )
        if self.download and self.spec.downloadable:
            return  # prepare_data() fetches whatever is missing
        assert self.spec.locate is not None
        for split in self.spec.required_splits(self.train_split):
            self.spec.locate(self.root, split)

    # ------------------------------------------------------------------------------ lightning
    def prepare_data(self) -> None:
        """Download missing files when ``download=True`` (runs on one process only)."""
        if not self.download or self.spec.download is None:
            return
        assert self.root is not None
        for split in self._missing_splits():
            self.spec.download(self.root, split)

    def setup(self, stage: str | None = None) -> None:
        """Read the data and build the splits (idempotent: a second call does nothing)."""
        if self.train_dataset is not None:
            return
        pool, pool_labels = self._load_pool()
        self._pool_dataset = pool
        train_idx, holdout_idx, test_idx = self._split_indices(len(pool))
        if self.exclude_classes and pool_labels is not None:
            excluded = torch.tensor(self.exclude_classes, dtype=torch.int64)
            train_idx = train_idx[~torch.isin(pool_labels[train_idx], excluded)]
            holdout_idx = holdout_idx[~torch.isin(pool_labels[holdout_idx], excluded)]
        if train_idx.numel() == 0:
            raise ValueError(
                f"the training split is empty ({len(pool)} images in the pool, val_size={self.val_size}, "
                f"test_size={self.test_size}, exclude_classes={self.exclude_classes})"
            )
        if self.validate_on == "val" and holdout_idx.numel() == 0:
            raise ValueError(
                f"validate_on='val' but val_size={self.val_size} leaves no validation images out of the "
                f"{len(pool)} in the pool; raise val_size or use validate_on='test'"
            )

        if self.spec.official_test_split:
            test_source, test_labels = self.load_in_memory("test", apply_limit=False)
            test_idx = torch.arange(len(test_source))
        else:
            test_source, test_labels = pool, pool_labels

        self.train_dataset = ScaledImageSubset(pool, train_idx, random_flip=self.random_flip)
        self.holdout_dataset = ScaledImageSubset(pool, holdout_idx)
        self.test_dataset = ScaledImageSubset(test_source, test_idx)
        if pool_labels is not None:
            self.train_labels = pool_labels[train_idx]
            self.holdout_labels = pool_labels[holdout_idx]
        if test_labels is not None:
            self.test_labels = test_labels[test_idx]
        if self.validate_on == "test":
            self.val_dataset, self.val_labels = self.test_dataset, self.test_labels
        else:
            self.val_dataset, self.val_labels = self.holdout_dataset, self.holdout_labels
        self.sample_shape = tuple(pool[0][0].shape)  # type: ignore[assignment]

    def content_sources(self) -> ContentSources | None:
        """What the splits were read from (:mod:`lebm.data.content`): the dataset's files (for an
        image folder, the image files used) and each split's labels; None before :meth:`setup`."""
        if self.train_dataset is None:
            return None
        files: list[Path] = []
        if self.spec.is_folder:
            files = list(getattr(self._pool_dataset, "files", []))
        elif self.spec.locate is not None and self.root is not None:
            splits = self.spec.required_splits(self.train_split)
            files = located_files([self.spec.locate(self.root, split) for split in splits])
        labels = {"train": self.train_labels, "holdout": self.holdout_labels, "test": self.test_labels}
        return ContentSources(files, labels, self.root)

    # ------------------------------------------------------------------------------- splitting
    def _test_count_after_limit(self) -> int | None:
        """Size of the test set taken from the files after ``limit`` (image folders with ``limit``), else None."""
        if not self.spec.is_folder or self.limit is None:
            return None
        if isinstance(self.test_size, float):
            return resolve_count(self.test_size, self.limit, "test_size")
        return int(self.test_size)

    def _split_indices(self, total: int) -> tuple[Tensor, Tensor, Tensor]:
        """Indices ``(train, holdout, test)`` into the pool of ``total`` images (test unused with an official split)."""
        n_test_after = self._test_count_after_limit()
        if n_test_after is not None:
            assert self.limit is not None
            n_val = resolve_count(self.val_size, self.limit, "val_size")
            holdout, train = random_split_indices(self.limit, [n_val], self.seed)
            return train, holdout, torch.arange(self.limit, self.limit + n_test_after)
        n_val = resolve_count(self.val_size, total, "val_size")
        n_test = 0 if self.spec.official_test_split else resolve_count(self.test_size, total, "test_size")
        holdout, test, train = random_split_indices(total, [n_val, n_test], self.seed)
        return train, holdout, test

    # -------------------------------------------------------------------------------- loading
    def _load_pool(self) -> tuple[Dataset, Tensor | None]:
        """The images the training (and, without an official test split, test) sets come from, and their labels."""
        if self.spec.is_folder:
            return self._load_folder(), None
        return self.load_in_memory(self.train_split, apply_limit=True)

    def _load_folder(self) -> ImageFolderDataset:
        """The folder's files in sorted order: all of them, or with ``limit`` the first ``limit``
        plus the test files after them."""
        assert self.root is not None and self.spec.locate is not None and self.preprocess is not None
        folder = Path(self.spec.locate(self.root, self.train_split))  # type: ignore[arg-type]
        files = list_image_files(folder)
        n_test_after = self._test_count_after_limit()
        needed = None if n_test_after is None else self.limit + n_test_after  # type: ignore[operator]
        dataset = ImageFolderDataset(
            folder,
            files=files,
            limit=needed,
            skip_unreadable=self.skip_unreadable,
            **dataclasses.asdict(self.preprocess),
        )
        self.skipped_files = list(dataset.skipped)
        if needed is not None and len(dataset) < needed:
            unreadable = f" readable ({len(dataset.skipped)} unreadable left out)" if dataset.skipped else ""
            raise ValueError(
                f"{self.spec.title}: limit={self.limit} and test_size={self.test_size} need {needed} image files "
                f"(the first {self.limit} train, the next {n_test_after} are the test set), but only "
                f"{len(dataset)}{unreadable} were found under '{folder}'; lower limit or test_size"
            )
        return dataset

    def load_in_memory(self, split: str, apply_limit: bool) -> tuple[InMemoryImages, Tensor]:
        """Read one split (``"train"``, ``"test"``, ...) of an in-memory dataset: images ``(N, C, H, W)``
        uint8 with ``limit`` (when ``apply_limit``), ``channels`` and ``image_size`` applied once, and
        labels ``(N,)`` int64. Other data modules reuse it (``OutOfDistributionDataModule``)."""
        assert self.spec.read is not None
        images, labels = self.spec.read(self.root, split)
        if apply_limit and self.limit is not None:
            images, labels = images[: self.limit], labels[: self.limit]
        if self.channels is not None:
            images = convert_channels(images, self.channels)
        if self.image_size is not None:
            images = resize_uint8(images, self.image_size)
        return InMemoryImages(images, labels), labels

    # ---------------------------------------------------------------------------- dataloaders
    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches of exactly ``batch_size`` (the last partial batch is dropped);
        the order and flips of each epoch depend only on the run's seed and the epoch, and a fit
        resumed from a mid-epoch checkpoint goes on with the epoch's next batch (exact resume)."""
        self.setup()
        assert self.train_dataset is not None
        if len(self.train_dataset) < self.batch_size:  # a DataError: the command prints it in one line
            raise DataError(
                f"batch_size={self.batch_size} exceeds the {len(self.train_dataset)} training images, so no whole "
                "training batch can be made (the last partial batch is dropped); lower data.init_args.batch_size"
            )
        return self._make_loader(self.train_dataset, self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order, from the test set or the carve-out (``validate_on``)."""
        self.setup()
        return self._make_loader(self.val_dataset, self.eval_batch_size, train=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in a fixed order."""
        self.setup()
        return self._make_loader(self.test_dataset, self.eval_batch_size, train=False)

    def _make_loader(self, dataset: Dataset | None, batch_size: int, train: bool) -> DataLoader:
        assert dataset is not None
        options = {"num_workers": self.num_workers, "pin_memory": torch.cuda.is_available()}
        if train:
            return training_loader(dataset, batch_size, trainer=self.trainer, **options)
        return evaluation_loader(dataset, batch_size, **options)


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value
