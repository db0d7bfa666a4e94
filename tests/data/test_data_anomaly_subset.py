"""``MNISTAnomalyDataModule(train_subset=...)``: a seeded share of the training split, nothing else moved."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lebm.data import MNISTAnomalyDataModule


def indices(dataset) -> set[int]:
    return set(dataset.indices.tolist())


@pytest.mark.parametrize("split", ["disjoint", "cited"])
@pytest.mark.parametrize("share", [0.25, 0.5])
def test_a_training_subset_is_a_seeded_share_of_the_training_split(make_mnist_idx, split: str, share: float) -> None:
    """Device: CPU. The subset holds ``round(share * n)`` of the full training split's digits, all
    of them from that split, none from the test split under ``disjoint``; the test split and the
    overlap the cited split reports follow what is kept; the same seed draws the same subset."""
    root, _ = make_mnist_idx(n_train=400, n_test=200)
    options = dict(anomaly_classes=[3], pool="full", split=split, batch_size=10)
    whole = MNISTAnomalyDataModule(str(root), **options)
    whole.setup()
    part = MNISTAnomalyDataModule(str(root), train_subset=share, **options)
    part.setup()
    kept, full = indices(part.train_dataset), indices(whole.train_dataset)
    assert len(kept) == round(share * len(full)) and kept < full
    assert indices(part.test_dataset) == indices(whole.test_dataset)
    shared = kept & indices(part.test_dataset)
    assert part.test_overlap == len(shared) / len(part.test_dataset)
    if split == "disjoint":
        assert not shared and part.test_overlap == 0.0
    again = MNISTAnomalyDataModule(str(root), train_subset=share, **options)
    again.setup()
    assert indices(again.train_dataset) == kept


def test_the_whole_training_split_is_the_default_bit_for_bit(make_mnist_idx) -> None:
    """Device: CPU. ``train_subset=1.0`` serves exactly the split served without the option."""
    root, _ = make_mnist_idx(n_train=200, n_test=100)
    default = MNISTAnomalyDataModule(str(root), anomaly_classes=[1], pool="full", batch_size=10)
    default.setup()
    explicit = MNISTAnomalyDataModule(str(root), anomaly_classes=[1], pool="full", batch_size=10, train_subset=1.0)
    explicit.setup()
    assert torch.equal(default.train_dataset.indices, explicit.train_dataset.indices)
    assert torch.equal(default.test_dataset.indices, explicit.test_dataset.indices)


@pytest.mark.parametrize("share", [0.0, -0.5, 1.5])
def test_a_share_outside_zero_to_one_is_refused_before_files_are_read(tmp_path: Path, share: float) -> None:
    with pytest.raises(ValueError, match=r"train_subset must be in \(0, 1\]"):
        MNISTAnomalyDataModule(str(tmp_path), train_subset=share)
