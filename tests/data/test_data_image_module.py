"""ImageDataModule: argument checks, splits, scaling and every dataset kind on tiny files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lebm.data import DATASET_NAMES, ImageDataModule
from lebm.data.keys import EpochKey


@pytest.fixture(scope="module")
def digits_module() -> ImageDataModule:
    module = ImageDataModule("digits", batch_size=64, seed=3)
    module.setup("fit")
    return module


# ------------------------------------------------------------------------------------ digits
def test_digits_batches_are_scaled_to_signed_unit(digits_module: ImageDataModule) -> None:
    x, y = next(iter(digits_module.train_dataloader()))
    assert x.dtype == torch.float32 and x.shape == (64, 1, 8, 8)
    assert y.dtype == torch.int64 and y.shape == (64,)
    everything = torch.cat([batch[0] for batch in digits_module.val_dataloader()])
    assert float(everything.min()) >= -1.0 and float(everything.max()) <= 1.0
    assert float(everything.min()) < -0.9 and float(everything.max()) > 0.9
    assert digits_module.sample_shape == (1, 8, 8)


def test_digits_pixel_values_map_linearly(digits_module: ImageDataModule) -> None:
    from lebm.data import read_digits

    images, labels = read_digits()
    index = int(digits_module.test_dataset.indices[0])
    x, y = digits_module.test_dataset[0]
    torch.testing.assert_close(x, images[index].float() / 127.5 - 1.0)
    assert int(y) == int(labels[index])


def test_digits_default_splits_are_train_and_test_only(digits_module: ImageDataModule) -> None:
    train = set(digits_module.train_dataset.indices.tolist())
    test = set(digits_module.test_dataset.indices.tolist())
    assert not (train & test) and len(test) == 180 and len(train) == 1797 - 180
    assert train | test == set(range(1797))
    assert len(digits_module.holdout_dataset) == 0
    assert digits_module.val_dataset is digits_module.test_dataset  # validation reads the test set


def test_digits_carved_splits_are_disjoint_sized_and_cover_the_pool() -> None:
    module = ImageDataModule("digits", val_size=0.1, validate_on="val", seed=3)
    module.setup()
    train = set(module.train_dataset.indices.tolist())
    val = set(module.val_dataset.indices.tolist())
    test = set(module.test_dataset.indices.tolist())
    assert module.val_dataset is module.holdout_dataset
    assert not (train & val) and not (train & test) and not (val & test)
    assert len(val) == 180 and len(test) == 180 and len(train) == 1797 - 360
    assert train | val | test == set(range(1797))


def test_digits_splits_are_deterministic_for_a_seed() -> None:
    def split(seed: int) -> ImageDataModule:
        module = ImageDataModule("digits", val_size=0.1, validate_on="val", seed=seed)
        module.setup()
        return module

    first, same, other = split(3), split(3), split(4)
    assert torch.equal(same.val_dataset.indices, first.val_dataset.indices)
    assert torch.equal(same.test_dataset.indices, first.test_dataset.indices)
    assert not torch.equal(other.val_dataset.indices, first.val_dataset.indices)


def test_split_sizes_accept_counts() -> None:
    module = ImageDataModule("digits", val_size=100, test_size=0, validate_on="val")
    module.setup()
    assert len(module.val_dataset) == 100 and len(module.test_dataset) == 0
    assert len(module.train_dataset) == 1697


def test_exclude_classes_only_affects_train_and_val() -> None:
    plain = ImageDataModule("digits", batch_size=64, seed=3, val_size=0.1, validate_on="val")
    plain.setup()
    module = ImageDataModule("digits", batch_size=64, seed=3, val_size=0.1, validate_on="val", exclude_classes=[3])
    module.setup()
    assert 3 not in module.train_labels.tolist() and 3 not in module.val_labels.tolist()
    assert 3 in module.test_labels.tolist()
    assert torch.equal(module.test_dataset.indices, plain.test_dataset.indices)
    seen = torch.cat([y for _, y in module.train_dataloader()])
    assert 3 not in seen.tolist() and len(seen) > 1000
    expected_train = int((plain.train_labels != 3).sum())
    assert len(module.train_dataset) == expected_train


def test_loaders_shuffle_and_drop_last_only_for_training(digits_module: ImageDataModule) -> None:
    train_loader = digits_module.train_dataloader()
    assert len(train_loader) == (1797 - 180) // 64
    assert all(x.shape[0] == 64 for x, _ in train_loader)
    loader = digits_module.train_dataloader()
    epochs = [next(iter(loader))[1] for _ in range(2)]
    assert not torch.equal(epochs[0], epochs[1])  # each pass is a new epoch with a new order
    again = digits_module.train_dataloader()
    again.sampler.set_epoch(1)
    assert torch.equal(next(iter(again))[1], epochs[1])  # an epoch's order depends only on (seed, epoch)
    val_labels = torch.cat([y for _, y in digits_module.val_dataloader()])
    assert torch.equal(val_labels, digits_module.val_labels)  # fixed order, nothing dropped


def test_resize_and_channels_known_before_setup() -> None:
    module = ImageDataModule("digits", image_size=16, channels=3, batch_size=10)
    assert module.sample_shape == (3, 16, 16)
    module.setup()
    x, _ = next(iter(module.train_dataloader()))
    assert x.shape == (10, 3, 16, 16)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])


def test_random_flip_applies_to_training_only() -> None:
    module = ImageDataModule("digits", random_flip=True, seed=0)
    module.setup()
    plain = ImageDataModule("digits", seed=0)
    plain.setup()
    index = next(i for i in range(50) if not torch.equal(plain.train_dataset[i][0], plain.train_dataset[i][0].flip(-1)))
    reference = plain.train_dataset[index][0]
    draws = [module.train_dataset[EpochKey(index, epoch, 7)][0] for epoch in range(40)]  # the training sampler's keys
    flipped = sum(torch.equal(draw, reference.flip(-1)) for draw in draws)
    assert all(torch.equal(d, reference) or torch.equal(d, reference.flip(-1)) for d in draws)
    assert 5 <= flipped <= 35
    assert all(torch.equal(module.train_dataset[index][0], reference) for _ in range(10))  # plain int key: no flip
    assert all(torch.equal(module.val_dataset[0][0], plain.val_dataset[0][0]) for _ in range(10))


def test_limit_uses_first_images_of_the_pool() -> None:
    module = ImageDataModule("digits", limit=200, val_size=0.1, test_size=0.1, validate_on="val")
    module.setup()
    assert len(module.train_dataset) + len(module.val_dataset) + len(module.test_dataset) == 200
    assert int(module.train_dataset.indices.max()) < 200


def test_batch_larger_than_training_set_is_an_error() -> None:
    module = ImageDataModule("digits", limit=50, batch_size=100)
    with pytest.raises(ValueError, match="batch_size"):
        module.train_dataloader()


def test_workers_persist() -> None:
    module = ImageDataModule("digits", num_workers=1)
    assert module.val_dataloader().persistent_workers


# ----------------------------------------------------------------------- argument checking
def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(ValueError) as info:
        ImageDataModule("imagenet")
    for name in DATASET_NAMES:
        assert name in str(info.value)


@pytest.mark.parametrize("dataset", ["mnist", "mnist_csv", "fashion_mnist", "svhn", "cifar10", "celeba", "folder"])
def test_file_datasets_without_root_say_how_to_pass_it(dataset: str) -> None:
    with pytest.raises(ValueError, match="--data.init_args.root"):
        ImageDataModule(dataset)


@pytest.mark.parametrize(
    "dataset,expected",
    [
        ("mnist", "train-images-idx3-ubyte"),
        ("fashion_mnist", "FashionMNIST"),
        ("svhn", "train_32x32.mat"),
        ("cifar10", "data_batch_1"),
        ("celeba", "img_align_celeba"),
        ("mnist_csv", "*.csv"),
        ("folder", "nothing_here"),
    ],
)
def test_missing_files_fail_at_construction_with_expected_path(tmp_path: Path, dataset: str, expected: str) -> None:
    root = tmp_path / "nothing_here"
    with pytest.raises(FileNotFoundError) as info:
        ImageDataModule(dataset, root=str(root))
    message = str(info.value)
    assert str(root) in message and expected in message


def test_download_defers_the_file_check_to_prepare_data(tmp_path: Path) -> None:
    module = ImageDataModule("mnist", root=str(tmp_path), download=True)  # no network use here
    assert module.dataset_name == "mnist" and module.train_dataset is None


def test_celeba_cannot_be_downloaded(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="by hand"):
        ImageDataModule("celeba", root=str(tmp_path), download=True)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(channels=2), "channels"),
        (dict(val_size=1.5), "val_size"),
        (dict(test_size=-1), "test_size"),
        (dict(test_size=10000.0), r"test_size as a fraction .* whole number without a decimal point \(10000\)"),
        (dict(batch_size=0), "batch_size"),
        (dict(train_split="extra"), "train_split"),
        (dict(center_crop=10), "center_crop"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ImageDataModule("digits", **kwargs)


def test_exclude_classes_needs_labels(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    with pytest.raises(ValueError, match="labels"):
        ImageDataModule("folder", root=str(tmp_path), exclude_classes=[1])


# ---------------------------------------------------------------------------- file datasets
def test_mnist_from_idx_files_uses_official_test_split(make_mnist_idx) -> None:
    root, arrays = make_mnist_idx(n_train=60, n_test=20, compress=True)
    module = ImageDataModule("mnist", root=str(root), batch_size=10, val_size=12, validate_on="val", seed=5)
    assert module.sample_shape == (1, 28, 28)
    module.setup()
    assert len(module.train_dataset) == 48 and len(module.val_dataset) == 12 and len(module.test_dataset) == 20
    test_images, test_labels = arrays["test"]
    x, y = module.test_dataset[7]
    torch.testing.assert_close(x[0], torch.from_numpy(test_images[7]).float() / 127.5 - 1.0)
    assert int(y) == int(test_labels[7])
    assert module.test_labels.tolist() == test_labels.tolist()
    train_index = int(module.train_dataset.indices[0])
    torch.testing.assert_close(
        module.train_dataset[0][0][0], torch.from_numpy(arrays["train"][0][train_index]).float() / 127.5 - 1.0
    )
    x, y = next(iter(module.train_dataloader()))
    assert x.shape == (10, 1, 28, 28) and y.shape == (10,)


def test_root_expands_environment_variables(make_mnist_idx, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = make_mnist_idx(layout="torchvision", compress=False)
    monkeypatch.setenv("LEBM_TEST_DATA_ROOT", str(root.parent))
    module = ImageDataModule("mnist", root=f"$LEBM_TEST_DATA_ROOT/{root.name}")
    assert module.root == root
    module.setup()
    assert len(module.test_dataset) == 20


def test_root_with_unset_variable_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEBM_SURELY_UNSET", raising=False)
    with pytest.raises(ValueError, match="LEBM_SURELY_UNSET"):
        ImageDataModule("mnist", root="$LEBM_SURELY_UNSET/mnist")


def test_mnist_csv_from_folder_carves_test_split(tmp_path: Path, mnist_csv_writer) -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(40, 28, 28), dtype=np.uint8)
    labels = np.arange(40) % 10
    mnist_csv_writer(tmp_path / "small.csv.gz", images, labels, header=False)
    module = ImageDataModule(
        "mnist_csv", root=str(tmp_path), val_size=0.25, test_size=0.25, validate_on="val", batch_size=5
    )
    module.setup()
    assert (len(module.train_dataset), len(module.val_dataset), len(module.test_dataset)) == (20, 10, 10)
    index = int(module.test_dataset.indices[0])
    torch.testing.assert_close(module.test_dataset[0][0][0], torch.from_numpy(images[index]).float() / 127.5 - 1)
    assert int(module.test_labels[0]) == labels[index]


def test_svhn_extra_train_split_and_official_test(make_svhn) -> None:
    root, arrays = make_svhn({"extra": 30, "test": 8})
    with pytest.raises(FileNotFoundError, match="train_32x32.mat"):
        ImageDataModule("svhn", root=str(root))
    module = ImageDataModule("svhn", root=str(root), train_split="extra", val_size=0, batch_size=10, channels=1)
    module.setup()
    assert len(module.train_dataset) == 30 and len(module.test_dataset) == 8
    assert module.sample_shape == (1, 32, 32)
    assert sorted(set(module.train_labels.tolist())) == list(range(10))


def test_cifar10_module(make_cifar10) -> None:
    root, batches = make_cifar10(per_batch=6)
    module = ImageDataModule("cifar10", root=str(root), val_size=0.2, validate_on="val", batch_size=8, image_size=16)
    module.setup()
    assert len(module.train_dataset) == 24 and len(module.val_dataset) == 6 and len(module.test_dataset) == 6
    x, _ = next(iter(module.train_dataloader()))
    assert x.shape == (8, 3, 16, 16)
    assert module.test_labels.tolist() == batches["test"][0][b"labels"]


def test_folder_module_is_unlabelled_and_resized(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for index in range(12):
        Image.fromarray(rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)).save(tmp_path / f"{index:02d}.png")
    module = ImageDataModule(
        "folder", root=str(tmp_path), image_size=8, val_size=2, test_size=2, validate_on="val", batch_size=4
    )
    assert module.sample_shape == (3, 8, 8)
    module.setup()
    assert (len(module.train_dataset), len(module.val_dataset), len(module.test_dataset)) == (8, 2, 2)
    assert module.train_labels is None
    x, y = next(iter(module.train_dataloader()))
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.float32 and y.tolist() == [-1] * 4
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    boxed = ImageDataModule("folder", root=str(tmp_path), crop_box=(2, 3, 12, 8), channels=1, val_size=0, test_size=0)
    assert boxed.sample_shape == (1, 5, 10)
    boxed.setup()
    assert boxed.sample_shape == (1, 5, 10) and boxed.train_dataset[0][0].shape == (1, 5, 10)


def test_celeba_module_defaults_to_64_pixels(tmp_path: Path) -> None:
    folder = tmp_path / "img_align_celeba"
    folder.mkdir()
    for index in range(6):
        Image.fromarray(np.full((218, 178, 3), index * 40, dtype=np.uint8)).save(folder / f"{index + 1:06d}.jpg")
    module = ImageDataModule("celeba", root=str(tmp_path), test_size=1, batch_size=2, limit=5)
    assert module.sample_shape == (3, 64, 64) and module.center_crop == 140
    module.setup()
    assert len(module.train_dataset) == 5 and module.test_dataset.indices.tolist() == [5]
    assert ImageDataModule("celeba", root=str(tmp_path), center_crop=0).center_crop is None
