"""DataLoaders whose randomness is a function of the run's seed and the epoch.

A training loader shuffles with :class:`EpochShuffle`: epoch ``e``'s order depends only on the
run's seed and ``e`` (Lightning calls ``set_epoch`` before every epoch), so a run resumed from a
checkpoint sees the same batches as an uninterrupted one. Evaluation loaders never touch torch's
global RNG, so validating does not change what training draws.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from lebm.randomness import data_order_seed, run_seed


class EpochShuffle(RandomSampler):
    """A random permutation per epoch, seeded from ``(seed, epoch)``.

    ``set_epoch(e)`` (called by Lightning before each epoch) selects the permutation; without it
    each pass moves on to the next epoch's. Under DDP, Lightning replaces this sampler by its
    ``DistributedSampler`` (also seeded by the run's seed and the epoch).

    Args:
        data_source: the dataset.
        seed: the base seed; None reads the run's seed (``seed_everything``) at each epoch.
        loader_generator: a generator to reseed with the epoch as well (the DataLoader's own,
            from which it draws its workers' seeds).
    """

    def __init__(
        self, data_source: Sized, seed: int | None = None, loader_generator: torch.Generator | None = None
    ) -> None:
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0
        self.loader_generator = loader_generator
        self._epoch_given = False

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._epoch_given = True
        if self.loader_generator is not None:
            self.loader_generator.manual_seed(self._seed() + 1)

    def _seed(self) -> int:
        return data_order_seed(self.seed if self.seed is not None else run_seed(), self.epoch)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self._seed())
        order = torch.randperm(len(self.data_source), generator=generator).tolist()
        if not self._epoch_given:
            self.epoch += 1
        self._epoch_given = False
        yield from order


def training_loader(dataset: Dataset, batch_size: int, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """Shuffled (:class:`EpochShuffle`) batches of exactly ``batch_size`` (last partial batch dropped)."""
    generator = torch.Generator()
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochShuffle(dataset, loader_generator=generator),  # type: ignore[arg-type]
        generator=generator,
        drop_last=True,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
    )


def evaluation_loader(dataset: Dataset, batch_size: int, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """Batches in a fixed order, drawing nothing from torch's global RNG."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        generator=torch.Generator(),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
    )
