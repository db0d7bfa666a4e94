"""Sample keys that carry the epoch, so that augmentation is a function of (seed, epoch, index).

A training sampler (:class:`lebm.data.loaders.EpochShuffle`) hands a dataset whose class sets
``accepts_epoch_keys = True`` an :class:`EpochKey` instead of a plain int; the dataset draws its
random augmentation from the key, not from torch's global RNG. So a batch is the same whichever
process fetches it (main process or a worker) and whenever (before or after a resumed run
restores its RNG state).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from lebm.randomness import derive_seed

#: Purpose word of the random flips in :func:`lebm.randomness.derive_seed` (ASCII "flip").
FLIP_PURPOSE = 0x666C6970


class EpochKey(NamedTuple):
    """Position ``index`` of a dataset, drawn in ``epoch`` of a run whose data seed is ``seed``."""

    index: int
    epoch: int
    seed: int


def accepts_epoch_keys(dataset: object) -> bool:
    """Whether ``dataset`` asks for :class:`EpochKey` keys (its ``accepts_epoch_keys`` attribute)."""
    return bool(getattr(dataset, "accepts_epoch_keys", False))


def split_key(key: int | EpochKey | tuple[int, int, int]) -> tuple[int, EpochKey | None]:
    """``(index, EpochKey or None)`` of a plain int index or an ``(index, epoch, seed)`` key."""
    if isinstance(key, tuple):
        if len(key) != 3:
            raise TypeError(
                f"a dataset key must be an int or an (index, epoch, seed) EpochKey, got the {len(key)}-tuple "
                f"{key!r}; build keys with lebm.data.keys.EpochKey(index, epoch, seed)"
            )
        epoch_key = EpochKey(*(int(part) for part in key))
        return epoch_key.index, epoch_key
    return int(key), None


def flip_draws(seed: int, epoch: int, length: int) -> Tensor:
    """Which of ``length`` images are mirrored in ``epoch``: bool ``(length,)``, each True with
    probability 1/2, a function of ``(seed, epoch)`` only (image ``i`` gets entry ``i``)."""
    generator = torch.Generator().manual_seed(derive_seed(seed, FLIP_PURPOSE, epoch))
    return torch.rand(length, generator=generator) < 0.5
