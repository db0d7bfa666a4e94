"""The dataset registry: one :class:`DatasetSpec` per dataset name, looked up by ``ImageDataModule``.

Adding a dataset is one call::

    register_dataset(DatasetSpec(
        name="my_digits", title="My digits", native_shape=(1, 28, 28), has_labels=True,
        official_test_split=True, locate=locate_my_digits, read=read_my_digits,
    ))

The built-in datasets are registered in :mod:`lebm.data.images.catalog` (imported by ``lebm.data``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

#: ``locate(root, split)``: cheap file-system check; returns what it found (paths, a folder) or
#: raises ``FileNotFoundError`` naming the expected paths and where to get them.
Locate = Callable[[Path, str], object]
#: ``read(root, split)``: images uint8 (N, C, H, W) and labels int64 (N,); ``root`` is None for
#: datasets that need no files.
Read = Callable[[Path | None, str], tuple[Tensor, Tensor]]
#: ``download(root, split)``: fetch the files of one split into ``root`` (needs internet).
Download = Callable[[Path, str], None]

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class DatasetSpec:
    """Everything ``ImageDataModule`` needs to know about one dataset.

    Two kinds exist: *in-memory* datasets (``read`` given) are read whole into a uint8 tensor;
    *folder* datasets (``read`` None) are image files read lazily, one by one, from the folder
    that ``locate(root, split)`` returns, and have no labels.

    Args:
        name: the ``dataset`` argument that selects it (lower case, digits, underscores).
        title: human-readable name for messages (defaults to ``name``).
        native_shape: (C, H, W) of the stored images; None for folders (depends on the files).
        has_labels: whether items carry class labels (``exclude_classes`` needs them).
        official_test_split: whether the files ship a "test" split; otherwise the test set is
            held out from the training pool.
        train_splits: split names valid as ``train_split`` (the first is the default, "train").
        locate: see :data:`Locate`; None for datasets that need no files (no ``root``).
        read: see :data:`Read`; None marks a folder dataset.
        download: see :data:`Download`; None when the files must be fetched by hand.
        default_image_size: folder datasets only: output side used when ``image_size`` is None.
        default_center_crop: folder datasets only: centre crop used when no crop or
            ``resize_shorter_side`` option is given.
    """

    name: str
    native_shape: tuple[int, int, int] | None
    has_labels: bool
    official_test_split: bool
    locate: Locate | None = None
    read: Read | None = None
    download: Download | None = None
    train_splits: tuple[str, ...] = ("train",)
    title: str = ""
    default_image_size: int | None = None
    default_center_crop: int | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"dataset name {self.name!r} must be lower case letters, digits and '_' (e.g. 'my_data')")
        if not self.title:
            object.__setattr__(self, "title", self.name)
        if not self.train_splits:
            raise ValueError(f"{self.name}: train_splits must name at least one split")
        if self.is_folder:
            if self.locate is None:
                raise ValueError(
                    f"{self.name}: a folder dataset (read=None) needs locate(root, split) returning the folder"
                )
            if self.native_shape is not None or self.has_labels or self.official_test_split:
                raise ValueError(
                    f"{self.name}: folder datasets (read=None) need native_shape=None, has_labels=False and "
                    "official_test_split=False (their test set is held out of the image files)"
                )
        else:
            if self.native_shape is None or len(self.native_shape) != 3:
                raise ValueError(f"{self.name}: native_shape must be (C, H, W) for a dataset read into memory")
            if self.default_image_size is not None or self.default_center_crop is not None:
                raise ValueError(f"{self.name}: default_image_size/default_center_crop apply to folder datasets only")
        if self.download is not None and self.locate is None:
            raise ValueError(f"{self.name}: a downloadable dataset needs locate() to find the downloaded files")

    @property
    def is_folder(self) -> bool:
        """True for lazily read image folders (no ``read`` function)."""
        return self.read is None

    @property
    def needs_files(self) -> bool:
        """True when the dataset reads files from a ``root``."""
        return self.locate is not None

    @property
    def downloadable(self) -> bool:
        """True when ``download: true`` can fetch missing files."""
        return self.download is not None

    def required_splits(self, train_split: str) -> tuple[str, ...]:
        """The file splits a run reads: the training split, plus "test" when there is an official one."""
        return (train_split, "test") if self.official_test_split else (train_split,)


_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec, replace: bool = False) -> DatasetSpec:
    """Make ``spec`` available as ``ImageDataModule(dataset=spec.name)``; returns ``spec``.

    Raises:
        ValueError: the name is taken and ``replace`` is False.
    """
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"dataset {spec.name!r} is already registered; pass replace=True to override it")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_dataset(name: str) -> None:
    """Remove a registered dataset (e.g. one a test added)."""
    get_dataset_spec(name)
    del _REGISTRY[name]


def dataset_names() -> tuple[str, ...]:
    """Registered dataset names, in registration order."""
    return tuple(_REGISTRY)


def get_dataset_spec(name: str) -> DatasetSpec:
    """The spec registered as ``name``.

    Raises:
        ValueError: unknown name; the message lists the valid ones and how to add a dataset.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown dataset {name!r}; valid names are: {', '.join(_REGISTRY)} "
            "(to add one, register a lebm.data.DatasetSpec with lebm.data.register_dataset)"
        ) from None
