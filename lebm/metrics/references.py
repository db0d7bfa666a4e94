"""The reference images and generated batches of FID, split over ranks so that the result does not
depend on the number of processes: which images, which rank reads which, and the seed of every
generated batch. No Lightning: the FID callback and the experiments use these."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from lebm.data.batches import batch_observations
from lebm.metrics.fid import rank_slice

#: Seed of the random subset of reference images (part of the cache key).
REFERENCE_SUBSET_SEED = 0
#: Which ``limit`` images of a larger split are the reference: a fixed random subset, or the first
#: ones in the dataset's order (DAMC's official script: its first 50,000 training images).
REFERENCE_SUBSETS = ("random", "first")


def rank_share(total: int, rank: int, world_size: int) -> tuple[int, int]:
    """The index range ``[start, stop)`` of ``rank``'s share of ``total`` items: contiguous, in
    rank order, ``ceil(total / world_size)`` each but the last ones (which may get fewer, or none)."""
    share = rank_slice(total, rank, world_size)
    return share.start, share.stop


def aligned_batches(start: int, stop: int, batch_size: int) -> list[tuple[int, int]]:
    """Split ``[start, stop)`` into batches whose edges fall on multiples of ``batch_size``."""
    edges = [start, *range((start // batch_size + 1) * batch_size, stop, batch_size), stop]
    return [(lo, hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True) if hi > lo]


def rank_batches(total: int, batch_size: int, rank: int, world_size: int) -> list[tuple[int, int]]:
    """``rank``'s share of the global batches ``[0, batch_size), [batch_size, 2 batch_size), ...``
    of ``total`` samples: whole batches, contiguous and in rank order, so that every sample falls
    in the same batch whatever the number of ranks."""
    batches = aligned_batches(0, total, batch_size)
    first, last = rank_share(len(batches), rank, world_size)
    return batches[first:last]


def batch_seed(seed: int, start: int) -> int:
    """The RNG seed of the generated batch that starts at global sample index ``start``."""
    return int(np.random.SeedSequence([seed, start]).generate_state(1)[0])


def reference_indices(length: int, limit: int | None, subset: str = "random") -> Tensor:
    """Dataset positions of the reference: all ``length`` of them (``limit`` None or not
    smaller), else ``limit`` of them: a fixed random subset (sorted), or with ``subset="first"``
    the first ``limit``."""
    if subset not in REFERENCE_SUBSETS:
        raise ValueError(f"reference_subset must be one of {REFERENCE_SUBSETS}, got {subset!r}")
    if limit is None or length <= limit:
        return torch.arange(length)
    if subset == "first":
        return torch.arange(limit)
    generator = torch.Generator().manual_seed(REFERENCE_SUBSET_SEED)
    return torch.randperm(length, generator=generator)[:limit].sort().values


def reference_batches(
    loader: DataLoader, limit: int | None, rank: int, world_size: int, batch_size: int, subset: str = "random"
) -> Iterator[Tensor]:
    """This rank's share of the reference images (all, or at most ``limit``), in batches ``(B, C, H, W)``.

    Map-style datasets give the whole dataset or ``limit`` of its images (:func:`reference_indices`:
    a fixed random subset, or the first ones), read in order; other loaders are read from the start
    until ``limit`` images have been seen.
    """
    dataset: Dataset = loader.dataset
    if not isinstance(dataset, IterableDataset) and hasattr(dataset, "__len__"):
        indices = reference_indices(len(dataset), limit, subset)
        start, stop = rank_share(len(indices), rank, world_size)
        subset = Subset(dataset, indices[start:stop].tolist())
        for batch in DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=loader.num_workers):
            yield batch_observations(batch)
        return
    if limit is None:
        raise ValueError(
            f"num_reference=None (the whole split) needs a dataset with a length, but the reference loader reads a "
            f"{type(dataset).__name__} without one: give num_reference=<number of images> to the FID callback"
        )
    yield from _stream_share(loader, *rank_share(limit, rank, world_size))


def _stream_share(loader: DataLoader, start: int, stop: int) -> Iterator[Tensor]:
    """Images ``[start, stop)`` of a loader read from its beginning, in the loader's batches."""
    seen = 0
    for batch in loader:
        x = batch_observations(batch)
        lo, hi = max(start - seen, 0), min(stop - seen, len(x))
        if hi > lo:
            yield x[lo:hi]
        seen += len(x)
        if seen >= stop:
            return
