"""Per-rank random streams of a method's chains, saved in and restored from checkpoints.

Every random number a method's training chains draw (initial states, Langevin noise, persistent
chains' draws) comes from its **training stream**, a ``torch.Generator`` seeded from the run's
seed and the process's global rank. So under DDP each rank draws different negatives and
posterior starts, a run is reproduced by the same seed and world size, and rank 0 of a multi-GPU
run draws what a single-process run draws. Evaluation draws from an **evaluation stream**
reseeded from ``(seed, rank, global step)`` at every evaluation, so validating more or less often
does not change training, and the same weights evaluate alike however they are reached:
``trainer.validate`` right after ``fit`` and ``lebm validate`` on the checkpoint that fit saved
read the same step (the checkpoint keeps it), so the same numbers. The user API (``generate``,
``infer``, ...) called without a ``generator`` uses torch's global RNG, as any PyTorch code does.

A checkpoint keeps every rank's training-stream state and torch's global RNG state (dropout draws
from it); resuming restores them. The data order and augmentation depend only on (seed, epoch,
index) (``lebm.data.loaders``), and a run resumed in the middle of an epoch skips the batches
already trained on. So training for 2 + 2 epochs equals training for 4, and a run stopped by
SIGTERM mid-epoch and resumed equals one never stopped.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

#: Key of the streams' state in a checkpoint.
CHECKPOINT_KEY = "lebm_random_streams"
_TRAIN, _EVAL, _DATA = 1, 2, 3


def rng_devices(device: torch.device) -> list[torch.device]:
    """The devices whose RNG ``torch.random.fork_rng`` must save and restore around work on
    ``device`` (its CUDA device; the CPU's is always saved)."""
    return [device] if device.type == "cuda" else []


def run_seed() -> int:
    """The run's seed: ``seed_everything``'s (``PL_GLOBAL_SEED``, set by the ``lebm`` CLI's
    ``seed_everything``) or else torch's initial seed (``torch.manual_seed``'s)."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None else int(torch.initial_seed())


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that depends on every key (e.g. ``(run seed, rank, purpose, epoch)``);
    nearby keys give unrelated seeds (NumPy's ``SeedSequence`` hashing)."""
    words = np.random.SeedSequence([int(k) % 2**64 for k in keys]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def data_order_seed(seed: int, epoch: int) -> int:
    """Seed of the training data order of ``epoch`` (used by lebm's DataModules)."""
    return derive_seed(seed, _DATA, epoch)


def _new_generator(device: torch.device, seed: int) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def _fits(state: Tensor, device: torch.device) -> bool:
    """Whether a generator state saved on some device can be set on a generator of ``device``
    (CPU and CUDA generators keep states of different sizes)."""
    return state.numel() == torch.Generator(device=device).get_state().numel()


class RandomStreams:
    """A method's random streams on this process (see the module docstring).

    Attributes:
        train: the training chains' generator (None until :meth:`start_training`).
        eval: the evaluation generator (None until :meth:`start_evaluation`).
    """

    def __init__(self) -> None:
        self.seed: int | None = None
        self.train: torch.Generator | None = None
        self.eval: torch.Generator | None = None
        self._restored: dict[str, Any] | None = None  # this rank's saved states, set on resume

    # -------------------------------------------------------------------------------- streams
    @contextlib.contextmanager
    def training_from(self, generator: torch.Generator) -> Iterator[None]:
        """Within the block, the training chains draw from ``generator`` (a recording's private
        copy of the training stream, whose state the caller hands back and forth)."""
        previous, self.train = self.train, generator
        try:
            yield
        finally:
            self.train = previous

    def start_training(self, device: torch.device, rank: int, world_size: int, global_step: int) -> bool:
        """Create the training stream on ``device``: the state saved in the checkpoint being
        resumed (restoring torch's global RNG state with it), else fresh from ``(seed, rank)``.
        Returns whether a saved state was restored."""
        restored, self._restored = self._restored, None
        mismatch = None
        if restored is not None and restored["world_size"] != world_size:
            mismatch = f"saved by {restored['world_size']} processes, this run has {world_size}"
        elif restored is not None and not _fits(restored["train"], device):
            mismatch = f"saved on another kind of device than this run's {device.type}"
        if restored is not None and mismatch is not None:
            rank_zero_warn(
                f"the checkpoint's random streams were {mismatch}: chains continue from fresh streams (seed, rank, "
                f"step {global_step}), so the run is not an exact continuation (the weights, optimisers and data "
                "order are)"
            )
            self.seed = restored["seed"]
            self.train = _new_generator(device, derive_seed(self.seed, rank, _TRAIN, global_step))
            return False
        if restored is None:
            self.seed = run_seed()
            self.train = _new_generator(device, derive_seed(self.seed, rank, _TRAIN))
            return False
        self.seed = restored["seed"]
        self.train = torch.Generator(device=device)
        self.train.set_state(restored["train"])
        torch.set_rng_state(restored["global_cpu"])
        if "global_cuda" in restored and device.type == "cuda":
            torch.cuda.set_rng_state(restored["global_cuda"], device)
        return True

    def start_evaluation(self, device: torch.device, rank: int, step: int) -> None:
        """Reseed the evaluation stream from ``(seed, rank, step)`` (the method's global step)."""
        seed = self.seed if self.seed is not None else run_seed()
        self.eval = _new_generator(device, derive_seed(seed, rank, _EVAL, step))

    # ---------------------------------------------------------------------------- checkpoints
    def local_state(self, device: torch.device, rank: int) -> dict[str, Tensor]:
        """This process's states as uint8 tensors: the training stream (as a new run would start
        it, if training has not started) and torch's global RNG."""
        train = self.train
        if train is None:
            train = _new_generator(device, derive_seed(run_seed(), rank, _TRAIN))
        state = {"train": train.get_state(), "global_cpu": torch.get_rng_state()}
        if device.type == "cuda":
            state["global_cuda"] = torch.cuda.get_rng_state(device)
        return state

    def checkpoint_state(self, gathered: list[dict[str, Tensor]]) -> dict[str, Any]:
        """What goes into the checkpoint: the seed and every rank's states (``gathered``, in
        rank order)."""
        seed = self.seed if self.seed is not None else run_seed()
        return {"seed": seed, "world_size": len(gathered), "ranks": gathered}

    def load_checkpoint_state(self, saved: dict[str, Any], rank: int) -> None:
        """Remember ``rank``'s states from a checkpoint, applied by :meth:`start_training`."""
        ranks = saved["ranks"]
        mine = ranks[rank] if rank < len(ranks) else ranks[0]
        self._restored = {"seed": saved["seed"], "world_size": saved["world_size"], **mine}


def pack(states: dict[str, Tensor]) -> tuple[Tensor, list[tuple[str, int]]]:
    """Concatenate uint8 state tensors into one ``(N,)`` tensor, with the ``(name, length)`` layout."""
    layout = [(name, int(value.numel())) for name, value in states.items()]
    return torch.cat([value.reshape(-1).to(torch.uint8) for value in states.values()]), layout


def unpack(flat: Tensor, layout: list[tuple[str, int]]) -> dict[str, Tensor]:
    """Inverse of :func:`pack` (on the CPU)."""
    out, offset = {}, 0
    for name, length in layout:
        out[name] = flat[offset : offset + length].cpu().clone()
        offset += length
    return out
