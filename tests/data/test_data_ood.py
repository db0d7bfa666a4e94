"""The OOD protocol: train on all in-distribution training images; evaluate on the in-distribution
test split (y = 0) followed by the out-of-distribution test split (y = 1)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml

from lebm.callbacks import AnomalyDetection
from lebm.data import OutOfDistributionDataModule
from lebm.data.transforms import from_signed_unit
from tests.helpers.trainers import quiet_trainer

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "data" / "fmnist_ood.yaml"
IN_MAX, OUT_MIN = 100, 156  # in-distribution pixels are <= IN_MAX, out-of-distribution ones >= OUT_MIN


def write_idx_dataset(folder: Path, idx_writer, n_train: int, n_test: int, low: int, high: int, seed: int) -> dict:
    """MNIST-named gzipped IDX files (flat in ``folder``) with pixels in [low, high]; returns the arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    arrays = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(low, high + 1, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        idx_writer(folder / f"{prefix}-images-idx3-ubyte", images, True)
        idx_writer(folder / f"{prefix}-labels-idx1-ubyte", labels, True)
        arrays[split] = (images, labels)
    return arrays


@pytest.fixture
def ood_files(tmp_path: Path, idx_writer) -> tuple[Path, Path, dict, dict]:
    """Fashion-MNIST-like files (dark, pixels <= IN_MAX) and MNIST-like files (bright, >= OUT_MIN)."""
    fashion = write_idx_dataset(tmp_path / "fashion", idx_writer, n_train=30, n_test=10, low=0, high=IN_MAX, seed=1)
    mnist = write_idx_dataset(tmp_path / "mnist", idx_writer, n_train=12, n_test=8, low=OUT_MIN, high=255, seed=2)
    return tmp_path / "fashion", tmp_path / "mnist", fashion, mnist


def served(loader) -> tuple[torch.Tensor, torch.Tensor]:
    """Every batch of ``loader`` concatenated: uint8 images (N, C, H, W) and labels (N,)."""
    xs, ys = zip(*loader, strict=True)
    return from_signed_unit(torch.cat(xs)), torch.cat(ys)


def image_set(images: np.ndarray | torch.Tensor) -> set[bytes]:
    return {np.asarray(image).reshape(-1).tobytes() for image in images}


def test_training_reads_the_whole_in_distribution_training_split(ood_files) -> None:
    fashion_root, mnist_root, fashion, mnist = ood_files
    dm = OutOfDistributionDataModule(root=str(fashion_root), out_root=str(mnist_root), batch_size=5)
    assert dm.sample_shape == (1, 28, 28) and dm.anomaly_classes == [1]
    dm.setup()
    x, y = served(dm.train_dataloader())
    assert x.shape == (30, 1, 28, 28)  # every one of the 30 training images, once
    assert image_set(x[:, 0]) == image_set(fashion["train"][0])
    assert int(x.max()) <= IN_MAX  # nothing from the out-of-distribution files
    assert not image_set(x[:, 0]) & image_set(fashion["test"][0])  # nor from the in-distribution test split
    assert torch.equal(dm.train_labels, torch.from_numpy(fashion["train"][1]).long())
    assert sorted(y.tolist()) == sorted(fashion["train"][1].tolist())


def test_validation_and_test_serve_in_test_then_out_test_labelled_0_and_1(ood_files) -> None:
    fashion_root, mnist_root, fashion, mnist = ood_files
    dm = OutOfDistributionDataModule(root=str(fashion_root), out_root=str(mnist_root), batch_size=5, eval_batch_size=4)
    dm.setup()
    expected_x = torch.from_numpy(np.concatenate([fashion["test"][0], mnist["test"][0]]))[:, None]
    expected_y = torch.tensor([0] * 10 + [1] * 8, dtype=torch.int64)
    for loader in (dm.val_dataloader(), dm.test_dataloader()):
        x, y = served(loader)
        assert torch.equal(x, expected_x)  # in-distribution test images first, in file order, then out
        assert y.dtype == torch.int64 and torch.equal(y, expected_y)
    assert torch.equal(dm.test_labels, expected_y)
    assert len(dm.test_dataset) == 18


def test_out_limit_keeps_the_first_out_of_distribution_images(ood_files) -> None:
    fashion_root, mnist_root, fashion, mnist = ood_files
    dm = OutOfDistributionDataModule(root=str(fashion_root), out_root=str(mnist_root), batch_size=5, out_limit=3)
    dm.setup()
    x, y = served(dm.test_dataloader())
    assert torch.equal(y, torch.tensor([0] * 10 + [1] * 3))
    assert torch.equal(x[10:, 0], torch.from_numpy(mnist["test"][0][:3]))
    assert torch.equal(dm.test_labels, y)
    more = OutOfDistributionDataModule(root=str(fashion_root), out_root=str(mnist_root), batch_size=5, out_limit=100)
    more.setup()
    assert int(more.test_labels.sum()) == 8  # a limit above the split's size keeps all of it
    with pytest.raises(ValueError, match="out_limit"):
        OutOfDistributionDataModule(root=str(fashion_root), out_root=str(mnist_root), out_limit=0)


def test_mismatched_shapes_fail_at_construction_naming_both_and_the_fix(make_fashion_mnist, make_cifar10) -> None:
    fashion_root, _ = make_fashion_mnist(n_train=10, n_test=4)
    cifar_root, batches = make_cifar10(per_batch=2)
    options = {"in_dataset": "fashion_mnist", "out_dataset": "cifar10", "root": str(fashion_root)}
    with pytest.raises(ValueError, match=r"\(1, 28, 28\).*\(3, 32, 32\).*channels.*image_size"):
        OutOfDistributionDataModule(**options, out_root=str(cifar_root))
    with pytest.raises(ValueError, match=r"\(3, 28, 28\).*\(3, 32, 32\)"):
        OutOfDistributionDataModule(**options, out_root=str(cifar_root), channels=3)
    dm = OutOfDistributionDataModule(**options, out_root=str(cifar_root), channels=3, image_size=32, batch_size=2)
    assert dm.sample_shape == (3, 32, 32)
    dm.setup()
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape[1:] == (3, 32, 32)
    assert torch.equal(dm.test_labels, torch.tensor([0] * 4 + [1] * 2))


def test_missing_or_shared_files_and_bad_datasets_fail_at_construction(tmp_path: Path, ood_files) -> None:
    fashion_root, mnist_root, _, _ = ood_files
    missing = tmp_path / "no_mnist_here"
    with pytest.raises(FileNotFoundError, match=r"MNIST .*no_mnist_here"):
        OutOfDistributionDataModule(root=str(fashion_root), out_root=str(missing))
    with pytest.raises(FileNotFoundError, match=r"Fashion-MNIST .*no_mnist_here"):
        OutOfDistributionDataModule(root=str(missing), out_root=str(mnist_root))
    with pytest.raises(ValueError, match="no root was given"):
        OutOfDistributionDataModule(root=None, out_root=str(mnist_root))
    # MNIST and Fashion-MNIST files share names: out_root defaulting to root would read the same files twice
    with pytest.raises(ValueError, match="same test files.*out_root"):
        OutOfDistributionDataModule(root=str(fashion_root))
    with pytest.raises(ValueError, match="official test split.*mnist"):
        OutOfDistributionDataModule(in_dataset="digits", out_dataset="mnist", out_root=str(mnist_root))


def test_one_root_works_with_torchvision_layout(tmp_path: Path, idx_writer) -> None:
    write_idx_dataset(tmp_path / "FashionMNIST" / "raw", idx_writer, 10, 4, low=0, high=IN_MAX, seed=1)
    write_idx_dataset(tmp_path / "MNIST" / "raw", idx_writer, 10, 6, low=OUT_MIN, high=255, seed=2)
    dm = OutOfDistributionDataModule(root=str(tmp_path), batch_size=5)
    dm.setup()
    x, y = served(dm.test_dataloader())
    assert torch.equal(y, torch.tensor([0] * 4 + [1] * 6))
    assert int(x[:4].max()) <= IN_MAX and int(x[4:].min()) >= OUT_MIN


class Scorer(L.LightningModule):
    """Anomaly score = the label (``from_label``) or the mean pixel (out images are the bright ones)."""

    evaluation_outputs = ("score",)

    def __init__(self, from_label: bool) -> None:
        super().__init__()
        self.from_label = from_label

    def validation_step(self, batch, batch_idx):
        x, y = batch
        return {"score": y.float() if self.from_label else x.flatten(1).mean(1)}


@pytest.mark.parametrize("from_label", [True, False], ids=["score=label", "score=brightness"])
def test_anomaly_detection_counts_the_out_of_distribution_images_as_positives(
    tmp_path: Path, ood_files, from_label: bool
) -> None:
    fashion_root, mnist_root, _, _ = ood_files
    dm = OutOfDistributionDataModule(root=str(fashion_root), out_root=str(mnist_root), batch_size=5, eval_batch_size=7)
    trainer = quiet_trainer(
        accelerator="cpu",
        devices=1,
        default_root_dir=str(tmp_path),
        callbacks=[AnomalyDetection()],  # anomaly_classes from the datamodule
    )
    (metrics,) = trainer.validate(Scorer(from_label), datamodule=dm)
    assert metrics["val/auprc"] == pytest.approx(1.0) and metrics["val/auroc"] == pytest.approx(1.0)


def test_recipe_fragment_builds_the_protocol(ood_files) -> None:
    fashion_root, mnist_root, _, _ = ood_files
    data = yaml.safe_load(RECIPE.read_text())["data"]
    assert data["class_path"] == "lebm.data.OutOfDistributionDataModule"
    args = data["init_args"]
    assert (args["in_dataset"], args["out_dataset"], args["root"], args["out_root"]) == (
        "fashion_mnist",
        "mnist",
        None,
        None,
    )
    dm = OutOfDistributionDataModule(**{**args, "root": str(fashion_root), "out_root": str(mnist_root)})
    assert dm.sample_shape == (1, 28, 28) and dm.batch_size == 100
