"""The training sampler and loader: per-epoch orders, DDP shards, resuming inside an epoch, and
flips that depend only on (seed, epoch, index)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from lebm.data import ImageDataModule
from lebm.data.datasets import InMemoryImages, ScaledImageSubset
from lebm.data.keys import EpochKey
from lebm.data.loaders import EpochShuffle, epoch_permutation, training_loader

BATCH_SIZE = 16


def flipping_digits(num_workers: int = 0) -> ImageDataModule:
    module = ImageDataModule("digits", batch_size=BATCH_SIZE, random_flip=True, num_workers=num_workers)
    module.setup()
    return module


def epoch_batches(loader: torch.utils.data.DataLoader, epoch: int, count: int | None = None) -> list[Tensor]:
    """The images of the first ``count`` batches (all if None) of ``epoch``: (B, C, H, W) each."""
    loader.sampler.set_epoch(epoch)
    batches = []
    for x, _ in loader:
        batches.append(x)
        if count is not None and len(batches) == count:
            break
    return batches


def all_equal(batches: list[Tensor], expected: list[Tensor]) -> bool:
    return len(batches) == len(expected) and all(torch.equal(a, b) for a, b in zip(batches, expected, strict=True))


def shard(length: int, epoch: int, num_replicas: int = 1, rank: int = 0, seed: int = 3) -> list[int]:
    sampler = EpochShuffle(range(length), seed=seed, num_replicas=num_replicas, rank=rank)
    sampler.set_epoch(epoch)
    return list(sampler)


# ------------------------------------------------------------------------------------ order
def test_epoch_order_is_the_same_for_fresh_loaders_and_any_number_of_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PL_GLOBAL_SEED", "3")
    module = flipping_digits()
    first = epoch_batches(module.train_dataloader(), epoch=2, count=6)
    assert all_equal(epoch_batches(module.train_dataloader(), epoch=2, count=6), first)
    assert not all_equal(epoch_batches(module.train_dataloader(), epoch=1, count=6), first)
    assert all_equal(epoch_batches(flipping_digits(num_workers=2).train_dataloader(), epoch=2, count=6), first)


def test_one_process_keeps_the_order_of_a_plain_permutation() -> None:
    """With one process epoch e is ``randperm`` seeded by ``data_order_seed(seed, e)`` (the
    order before DDP sharding existed), and passes without ``set_epoch`` walk the epochs."""
    assert shard(50, epoch=4) == epoch_permutation(50, 3, 4)
    sampler = EpochShuffle(range(50), seed=3)
    assert [list(sampler) for _ in range(3)] == [epoch_permutation(50, 3, epoch) for epoch in range(3)]


def test_the_process_group_gives_the_shard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda group=None: 1)
    sampler = EpochShuffle(range(11), seed=3)
    assert (sampler.num_replicas, sampler.rank, len(sampler)) == (2, 1, 5)
    sampler.set_epoch(4)
    assert list(sampler) == shard(11, epoch=4, num_replicas=2, rank=1)


# ------------------------------------------------------------------------------------- DDP
def test_two_ranks_split_the_epoch_into_disjoint_equal_shards() -> None:
    length, epoch = 11, 4
    ranks = [shard(length, epoch, num_replicas=2, rank=rank) for rank in (0, 1)]
    assert [len(indices) for indices in ranks] == [5, 5]
    assert not set(ranks[0]) & set(ranks[1])
    kept = epoch_permutation(length, 3, epoch)[:10]  # the permutation cut to a multiple of 2
    assert sorted(ranks[0] + ranks[1]) == sorted(kept)
    assert ranks[0] == kept[0::2] and ranks[1] == kept[1::2]


def test_a_shard_needs_an_item_per_process() -> None:
    with pytest.raises(ValueError, match="fewer than the 4 processes"):
        EpochShuffle(range(3), num_replicas=4, rank=0)
    with pytest.raises(ValueError, match="0 <= rank < num_replicas"):
        EpochShuffle(range(8), num_replicas=2, rank=2)


# ---------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("num_replicas", [1, 2])
def test_resume_yields_the_tail_of_the_epoch_once(num_replicas: int) -> None:
    full = shard(40, epoch=2, num_replicas=num_replicas, rank=num_replicas - 1)
    sampler = EpochShuffle(range(40), seed=3, num_replicas=num_replicas, rank=num_replicas - 1)
    sampler.resume(epoch=2, batches_done=3, batch_size=4)
    sampler.set_epoch(2)
    assert list(sampler) == full[12:]
    sampler.set_epoch(2)
    assert list(sampler) == full  # only once


def test_resume_of_another_epoch_is_dropped() -> None:
    sampler = EpochShuffle(range(40), seed=3)
    sampler.resume(epoch=1, batches_done=3, batch_size=4)  # e.g. the epoch had ended: the fit goes on with epoch 2
    sampler.set_epoch(2)
    assert list(sampler) == shard(40, epoch=2)
    sampler.set_epoch(1)
    assert list(sampler) == shard(40, epoch=1)


def test_resume_applies_to_the_next_pass_without_set_epoch() -> None:
    sampler = EpochShuffle(range(40), seed=3)
    sampler.resume(epoch=0, batches_done=2, batch_size=5)
    assert list(sampler) == shard(40, epoch=0)[10:]
    assert list(sampler) == shard(40, epoch=1)


def test_resume_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="batch_size > 0"):
        EpochShuffle(range(8), seed=3).resume(epoch=0, batches_done=1, batch_size=0)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resumed_loader_gives_the_remaining_batches_with_the_same_flips(
    monkeypatch: pytest.MonkeyPatch, num_workers: int
) -> None:
    monkeypatch.setenv("PL_GLOBAL_SEED", "3")
    module = flipping_digits(num_workers)
    straight = epoch_batches(module.train_dataloader(), epoch=1)
    loader = module.train_dataloader()
    loader.sampler.resume(epoch=1, batches_done=4, batch_size=BATCH_SIZE)
    torch.manual_seed(123)  # the global RNG does not take part
    assert all_equal(epoch_batches(loader, epoch=1), straight[4:])


# ----------------------------------------------------------------------------------- flips
def test_flips_depend_only_on_seed_epoch_and_index() -> None:
    images = torch.arange(64, dtype=torch.uint8).reshape(4, 1, 4, 4)  # no image is its own mirror
    dataset = ScaledImageSubset(InMemoryImages(images), torch.arange(4), random_flip=True)
    plain = [dataset[index][0] for index in range(4)]

    def flipped(key: EpochKey) -> bool:
        image = dataset[key][0]
        assert torch.equal(image, plain[key.index]) or torch.equal(image, plain[key.index].flip(-1))
        return not torch.equal(image, plain[key.index])

    keys = [EpochKey(index, epoch, seed) for index in range(4) for epoch in range(12) for seed in (3, 4)]
    draws = {key: flipped(key) for key in keys}
    torch.manual_seed(99)
    assert all(flipped(key) == draw for key, draw in reversed(draws.items()))  # any call order, any global RNG
    assert 0.25 < sum(draws.values()) / len(draws) < 0.75
    assert len({tuple(draws[EpochKey(i, e, 3)] for i in range(4)) for e in range(12)}) > 1  # epochs differ
    assert any(draws[EpochKey(i, e, 3)] != draws[EpochKey(i, e, 4)] for i in range(4) for e in range(12))  # seeds


def test_plain_int_keys_and_evaluation_are_never_flipped() -> None:
    module = flipping_digits()
    plain = ImageDataModule("digits", batch_size=BATCH_SIZE)
    plain.setup()
    assert all(torch.equal(module.train_dataset[i][0], plain.train_dataset[i][0]) for i in range(50))
    assert torch.equal(next(iter(module.val_dataloader()))[0], next(iter(plain.val_dataloader()))[0])


def test_datasets_without_epoch_keys_receive_int_indices() -> None:
    dataset = TensorDataset(torch.arange(20))
    loader = training_loader(dataset, batch_size=5)
    assert all(isinstance(index, int) for index in loader.sampler)
    assert sorted(torch.cat([batch for (batch,) in loader]).tolist()) == list(range(20))


def test_loaders_start_no_more_workers_than_the_machine_has_cores() -> None:
    """CPU. A recipe's ``num_workers: 4`` on a 2-core machine made torch warn once per loader: the
    loaders take at most the cores this process may run on (the batches do not depend on it)."""
    import os
    import warnings

    from torch.utils.data import TensorDataset

    from lebm.data.loaders import evaluation_loader, training_loader

    cores = len(os.sched_getaffinity(0))
    data = TensorDataset(torch.arange(8.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "suggested max number of worker" warning would fail it
        for loader in (training_loader(data, 2, num_workers=cores + 3), evaluation_loader(data, 2, num_workers=99)):
            assert loader.num_workers == cores
    assert training_loader(data, 2, num_workers=0).num_workers == 0
