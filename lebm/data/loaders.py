"""DataLoaders whose randomness is a function of the run's seed and the epoch.

A training loader shuffles with :class:`EpochShuffle`: epoch ``e``'s order depends only on the
run's seed and ``e`` (Lightning calls ``set_epoch`` before every epoch), so a run resumed from a
checkpoint sees the same batches as an uninterrupted one. It is a ``DistributedSampler``, so
Lightning keeps it under DDP: each process reads its own shard of the same permutation.

Resuming inside an epoch: ``training_loader(..., trainer=...)`` (a DataModule passes
``self.trainer``) tells the sampler, when the trainer restarts a fit from a mid-epoch checkpoint,
to skip the batches of that epoch already trained on; the loader then counts as resumable for
Lightning (``state_dict``/``load_state_dict``). Datasets that ask for it (``accepts_epoch_keys``)
receive :class:`~lebm.data.keys.EpochKey` keys and draw their augmentation from them.

Evaluation loaders never touch torch's global RNG, so validating does not change what training draws.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lebm.data.keys import EpochKey, accepts_epoch_keys
from lebm.data.resume import fit_position, mid_epoch_restart
from lebm.devices import usable_cpu_cores
from lebm.randomness import data_order_seed, run_seed


def process_group_shape() -> tuple[int, int]:
    """``(world size, rank)`` of torch.distributed's default process group; ``(1, 0)`` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def epoch_permutation(length: int, seed: int, epoch: int) -> list[int]:
    """The global order of ``epoch``: a permutation of ``range(length)`` seeded from ``(seed, epoch)``."""
    generator = torch.Generator().manual_seed(data_order_seed(seed, epoch))
    return torch.randperm(length, generator=generator).tolist()


def rank_shard(order: list[int], num_replicas: int, rank: int) -> list[int]:
    """``rank``'s share of ``order``: ``order`` cut to a multiple of ``num_replicas`` (the tail of
    fewer than ``num_replicas`` items is dropped), then every ``num_replicas``-th item from ``rank``."""
    usable = len(order) - len(order) % num_replicas
    return order[rank:usable:num_replicas]


class EpochShuffle(DistributedSampler):
    """A random permutation per epoch, seeded from ``(seed, epoch)``, sharded over processes.

    Epoch ``e``'s global order is :func:`epoch_permutation`; process ``rank`` of ``num_replicas``
    reads :func:`rank_shard` of it (equal shards, the last ``len % num_replicas`` items of the
    order dropped). With one process this is the whole permutation. ``set_epoch(e)`` (called by
    Lightning before each epoch) selects the epoch; without it each pass moves on to the next.
    :meth:`resume` makes one pass start inside its epoch.

    Datasets with ``accepts_epoch_keys`` receive :class:`~lebm.data.keys.EpochKey` keys
    ``(index, epoch, seed)``; the others plain int indices.

    Args:
        data_source: the dataset.
        seed: the base seed; None reads the run's seed (``seed_everything``) at each pass.
        loader_generator: a generator to reseed with the epoch as well (the DataLoader's own,
            from which it draws its workers' seeds).
        num_replicas, rank: the shard to read; None reads them from torch.distributed's process
            group at construction (1 and 0 without one).
    """

    def __init__(
        self,
        data_source: Sized,
        seed: int | None = None,
        loader_generator: torch.Generator | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        world, own_rank = process_group_shape()
        num_replicas = world if num_replicas is None else num_replicas
        rank = own_rank if rank is None else rank
        _check_shard(len(data_source), num_replicas, rank)
        super().__init__(data_source, num_replicas=num_replicas, rank=rank, shuffle=True, drop_last=True)  # type: ignore[arg-type]
        self.data_source = data_source
        self.seed = seed  # type: ignore[assignment]  # DistributedSampler's is an int
        self.loader_generator = loader_generator
        self.epoch_keys = accepts_epoch_keys(data_source)
        self._epoch_given = False
        self._resume: tuple[int, int] | None = None  # (epoch, indices of this rank's shard to skip)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._epoch_given = True
        if self.loader_generator is not None:
            self.loader_generator.manual_seed(data_order_seed(self._base_seed(), self.epoch) + 1)

    def resume(self, epoch: int, batches_done: int, batch_size: int) -> None:
        """Start the pass over ``epoch`` (the next pass, if it is that epoch) after its first
        ``batches_done * batch_size`` indices of this rank's shard; a pass over another epoch
        drops this request."""
        if epoch < 0 or batches_done < 0 or batch_size <= 0:
            raise ValueError(
                f"resume needs epoch >= 0, batches_done >= 0 and batch_size > 0, got epoch={epoch}, "
                f"batches_done={batches_done}, batch_size={batch_size}"
            )
        self._resume = (int(epoch), int(batches_done) * int(batch_size))

    def _base_seed(self) -> int:
        return self.seed if self.seed is not None else run_seed()

    def _next_pass_epoch(self) -> int:
        """The epoch of the pass that starts now (and move on, if no ``set_epoch`` chose it)."""
        epoch = self.epoch
        if not self._epoch_given:
            self.epoch += 1
        self._epoch_given = False
        return epoch

    def _take_skip(self, epoch: int) -> int:
        """How many indices the pass over ``epoch`` skips (the pending :meth:`resume`, used once)."""
        pending, self._resume = self._resume, None
        return pending[1] if pending is not None and pending[0] == epoch else 0

    def __iter__(self) -> Iterator[int | EpochKey]:  # type: ignore[override]
        epoch = self._next_pass_epoch()
        seed = self._base_seed()
        order = epoch_permutation(len(self.data_source), seed, epoch)
        shard = rank_shard(order, self.num_replicas, self.rank)[self._take_skip(epoch) :]
        if self.epoch_keys:
            return iter([EpochKey(index, epoch, seed) for index in shard])
        return iter(shard)

    def __len__(self) -> int:
        """Indices in a whole pass over this rank's shard (a resumed pass yields fewer)."""
        return len(self.data_source) // self.num_replicas


def _check_shard(length: int, num_replicas: int, rank: int) -> None:
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas} and {rank}")
    if length < num_replicas:
        raise ValueError(
            f"the dataset has {length} items, fewer than the {num_replicas} processes that share it: each "
            "process needs at least one; use a larger dataset or fewer processes"
        )


class _DeferredIterator(Iterator):
    """An iterator that creates the real one (``start()``) when its first item is asked for."""

    def __init__(self, start: Callable[[], Iterator]) -> None:
        self._start: Callable[[], Iterator] | None = start
        self._iterator: Iterator | None = None

    def __iter__(self) -> _DeferredIterator:
        return self

    def __next__(self) -> Any:
        if self._iterator is None:
            assert self._start is not None
            self._iterator, self._start = self._start(), None
        return next(self._iterator)


class EpochLoader(DataLoader):
    """A DataLoader that reads its sampler when the first batch is asked for, not at ``iter()``.

    Worker processes take their first indices as soon as a DataLoader iterator exists, and
    Lightning creates the training iterator before it calls ``set_epoch`` (and before it restarts
    an epoch): deferring keeps a pass from reading the sampler before its epoch is chosen, so
    ``num_workers > 0`` gives the batches ``num_workers = 0`` gives.
    """

    def __iter__(self) -> Iterator:  # type: ignore[override]
        return _DeferredIterator(lambda: DataLoader.__iter__(self))


class ResumableEpochLoader(EpochLoader):
    """An :class:`EpochLoader` tied to a Lightning trainer, resumable inside an epoch.

    Its state (in Lightning checkpoints) is ``{"epoch", "batches_done"}``: the trainer's current
    epoch and the batches of it this process has trained on (the trainer's progress, so the
    batches a worker or a fetcher prefetched do not count). The resume itself is set up by
    :func:`training_loader` from the trainer's restored progress (the same counters), so
    :meth:`load_state_dict` only keeps the state it is given (``loaded_state``).
    """

    def __init__(self, *args: Any, trainer: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trainer = trainer
        self.loaded_state: dict[str, int] | None = None

    def state_dict(self) -> dict[str, int]:
        epoch, done = fit_position(self.trainer)
        return {"epoch": epoch, "batches_done": done}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.loaded_state = dict(state_dict)


def workers_for_machine(num_workers: int) -> int:
    """``num_workers``, at most the CPU cores this process may run on (torch warns, once per
    loader, about more workers than that; a recipe's 4 on a 2-core machine printed it three times).
    The batches do not depend on the number of workers (:class:`EpochLoader`)."""
    return max(0, min(int(num_workers), usable_cpu_cores()))


def training_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    trainer: Any = None,
    collate_fn: Callable[[list], Any] | None = None,
    seed: int | None = None,
) -> DataLoader:
    """Shuffled (:class:`EpochShuffle`) batches of exactly ``batch_size`` (last partial batch dropped).

    With ``trainer`` (a DataModule's ``self.trainer``; None outside a Trainer) the loader is a
    :class:`ResumableEpochLoader`: when the trainer is restarting a fit from a checkpoint saved
    inside an epoch, the sampler skips the batches of that epoch already trained on.
    ``collate_fn`` merges a batch's items (None: torch's default collate); ``seed`` is the
    order's base seed (None: the run's seed, read at each pass); ``num_workers`` at most the
    machine's cores (:func:`workers_for_machine`).
    """
    generator = torch.Generator()
    sampler = EpochShuffle(dataset, seed=seed, loader_generator=generator)  # type: ignore[arg-type]
    num_workers = workers_for_machine(num_workers)
    options: dict[str, Any] = {
        "batch_size": batch_size,
        "sampler": sampler,
        "generator": generator,
        "drop_last": True,
        "num_workers": num_workers,
        "persistent_workers": num_workers > 0,
        "pin_memory": pin_memory,
        "collate_fn": collate_fn,
    }
    if trainer is None:
        return EpochLoader(dataset, **options)
    loader = ResumableEpochLoader(dataset, trainer=trainer, **options)
    restart = mid_epoch_restart(trainer)
    if restart is not None:
        sampler.resume(*restart, batch_size=batch_size)
    return loader


def evaluation_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    collate_fn: Callable[[list], Any] | None = None,
) -> DataLoader:
    """Batches in a fixed order, drawing nothing from torch's global RNG; ``collate_fn`` merges a
    batch's items (None: torch's default collate); ``num_workers`` at most the machine's cores
    (:func:`workers_for_machine`)."""
    num_workers = workers_for_machine(num_workers)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        generator=torch.Generator(),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
        collate_fn=collate_fn,
    )
