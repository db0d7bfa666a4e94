"""The dataset registry (one spec per dataset) and Fashion-MNIST, added through it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from lebm.data import (
    DATASET_NAMES,
    DatasetSpec,
    ImageDataModule,
    dataset_names,
    get_dataset_spec,
    read_fashion_mnist,
    register_dataset,
    unregister_dataset,
)
from lebm.data.images.download import download_with_torchvision

BUILT_IN = ("digits", "mnist", "mnist_csv", "fashion_mnist", "svhn", "cifar10", "celeba", "folder")


# -------------------------------------------------------------------------------- registry
def test_built_in_datasets_are_registered_once_with_their_properties() -> None:
    assert set(BUILT_IN) <= set(dataset_names()) and set(BUILT_IN) <= set(DATASET_NAMES)
    official = {name for name in BUILT_IN if get_dataset_spec(name).official_test_split}
    assert official == {"mnist", "fashion_mnist", "svhn", "cifar10"}
    downloadable = {name for name in BUILT_IN if get_dataset_spec(name).downloadable}
    assert downloadable == {"mnist", "fashion_mnist", "svhn", "cifar10"}
    folders = {name for name in BUILT_IN if get_dataset_spec(name).is_folder}
    assert folders == {"celeba", "folder"}
    assert get_dataset_spec("svhn").train_splits == ("train", "extra")
    assert get_dataset_spec("fashion_mnist").native_shape == (1, 28, 28)
    assert not get_dataset_spec("digits").needs_files


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError) as info:
        get_dataset_spec("imagenet")
    assert "imagenet" in str(info.value)
    assert all(name in str(info.value) for name in BUILT_IN)
    assert "register_dataset" in str(info.value)


def _ramp_images(n: int) -> torch.Tensor:
    return torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 6).contiguous()


def _read_ramp(root: Path | None, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    n = 30 if split == "train" else 8
    offset = 0 if split == "train" else 100
    return _ramp_images(n) + offset, torch.arange(n) % 3


@pytest.fixture
def ramp_dataset() -> Iterator[DatasetSpec]:
    """A made-up in-memory dataset with an official test split, registered for one test."""
    spec = register_dataset(
        DatasetSpec(
            name="ramp_for_tests",
            native_shape=(1, 4, 6),
            has_labels=True,
            official_test_split=True,
            read=_read_ramp,
        )
    )
    yield spec
    unregister_dataset(spec.name)


def test_one_registration_makes_a_dataset_usable(ramp_dataset: DatasetSpec) -> None:
    module = ImageDataModule("ramp_for_tests", batch_size=10, image_size=8)
    assert module.spec is ramp_dataset and module.sample_shape == (1, 8, 8) and module.root is None
    module.setup()
    assert len(module.train_dataset) == 30 and len(module.test_dataset) == 8  # whole train, official test
    assert module.test_dataset.source.images.min() >= 100  # read(root, "test") was used for the test set
    x, _ = next(iter(module.val_dataloader()))
    assert x.shape == (8, 1, 8, 8)
    with pytest.raises(ValueError, match="already registered"):
        register_dataset(ramp_dataset)
    assert register_dataset(ramp_dataset, replace=True) is ramp_dataset


def test_unregistered_dataset_is_gone(ramp_dataset: DatasetSpec) -> None:
    unregister_dataset("ramp_for_tests")
    with pytest.raises(ValueError, match="unknown dataset"):
        ImageDataModule("ramp_for_tests")
    register_dataset(ramp_dataset)  # for the fixture's clean-up


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(name="Bad Name", native_shape=(1, 2, 2), has_labels=True, read=_read_ramp), "lower case"),
        (dict(name="f", native_shape=None, has_labels=True, locate=lambda root, split: root), "has_labels"),
        (dict(name="f", native_shape=None, has_labels=False), "locate"),
        (dict(name="m", native_shape=None, has_labels=True, read=_read_ramp), "native_shape"),
    ],
)
def test_inconsistent_specs_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DatasetSpec(official_test_split=False, **kwargs)


def test_download_refuses_datasets_torchvision_cannot_fetch(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        download_with_torchvision("celeba", tmp_path, "train")
    assert "by hand" in str(info.value) and "fashion_mnist" in str(info.value)


# --------------------------------------------------------------------------- Fashion-MNIST
@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_read_fashion_mnist_round_trips(make_fashion_mnist, compress: bool, layout: str) -> None:
    root, arrays = make_fashion_mnist(n_train=12, n_test=5, compress=compress, layout=layout)
    for split in ("train", "test"):
        images, labels = read_fashion_mnist(root, split)
        expected_images, expected_labels = arrays[split]
        assert images.dtype == torch.uint8 and images.shape == (len(expected_labels), 1, 28, 28)
        np.testing.assert_array_equal(images[:, 0].numpy(), expected_images)
        assert labels.dtype == torch.int64 and labels.tolist() == expected_labels.tolist()


def test_fashion_mnist_missing_files_name_paths_and_source(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        read_fashion_mnist(tmp_path, "train")
    message = str(info.value)
    assert "Fashion-MNIST" in message
    assert str(tmp_path / "train-images-idx3-ubyte.gz") in message
    assert str(tmp_path / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte") in message
    assert "https://github.com/zalandoresearch/fashion-mnist" in message and "download: true" in message


def test_fashion_mnist_does_not_pick_up_mnist_files(make_mnist_idx) -> None:
    root, _ = make_mnist_idx(layout="torchvision")  # root/MNIST/raw: not Fashion-MNIST's folder
    with pytest.raises(FileNotFoundError, match="FashionMNIST"):
        ImageDataModule("fashion_mnist", root=str(root))


def test_fashion_mnist_module_trains_on_the_whole_split(make_fashion_mnist) -> None:
    root, arrays = make_fashion_mnist(n_train=30, n_test=10, layout="torchvision")
    module = ImageDataModule("fashion_mnist", root=str(root), batch_size=10)
    assert module.sample_shape == (1, 28, 28)
    module.setup()
    assert len(module.train_dataset) == 30 and len(module.test_dataset) == 10
    assert module.test_labels.tolist() == arrays["test"][1].tolist()
    x, _ = module.val_dataset[3]
    torch.testing.assert_close(x[0], torch.from_numpy(arrays["test"][0][3]).float() / 127.5 - 1.0)


def test_fashion_mnist_download_defers_the_file_check(tmp_path: Path) -> None:
    module = ImageDataModule("fashion_mnist", root=str(tmp_path), download=True)  # no network use here
    assert module.train_dataset is None
