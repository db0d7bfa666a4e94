"""Small torch Datasets that turn stored uint8 images into float model inputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from lebm.data.keys import EpochKey, flip_draws, split_key
from lebm.data.transforms import to_signed_unit


class InMemoryImages(Dataset):
    """uint8 images held in one tensor. Items: ``(image uint8 (C, H, W), label int64 scalar)``.

    Args:
        images: uint8 (N, C, H, W).
        labels: int64 (N,), or None for "no labels" (every label is then -1).
    """

    def __init__(self, images: Tensor, labels: Tensor | None = None) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels is None:
            labels = torch.full((images.shape[0],), -1, dtype=torch.int64)
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.to(torch.int64)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]


class ScaledImageSubset(Dataset):
    """A subset of a uint8-image dataset, served as float32 in [-1, 1].

    Items: ``(image float32 (C, H, W) in [-1, 1], label)``. A key is a position (int) or an
    :class:`~lebm.data.keys.EpochKey` ``(index, epoch, seed)``, which the training sampler hands
    this dataset (``accepts_epoch_keys``). With ``random_flip``, the image of an ``EpochKey`` is
    mirrored left-right with probability 1/2, a function of ``(seed, epoch, index)`` only (not of
    torch's global RNG, so workers, resumed runs and the main process agree); a plain int key
    (direct indexing, evaluation, FID references) always gives the unflipped image.

    Args:
        source: dataset whose items are ``(uint8 (C, H, W), label)``.
        indices: positions in ``source`` that make up this subset.
        random_flip: apply the random horizontal flip to epoch-keyed items.
    """

    #: Ask the training sampler for :class:`~lebm.data.keys.EpochKey` keys.
    accepts_epoch_keys = True

    def __init__(self, source: Dataset, indices: Sequence[int] | Tensor, random_flip: bool = False) -> None:
        self.source = source
        self.indices = torch.as_tensor(indices, dtype=torch.int64)
        self.random_flip = random_flip
        self._flips: tuple[tuple[int, int], Tensor] | None = None  # ((seed, epoch), bool (N,)) of the last epoch

    def __len__(self) -> int:
        return int(self.indices.numel())

    def __getitem__(self, key: int | EpochKey) -> tuple[Tensor, Tensor | int]:
        index, epoch_key = split_key(key)
        image, label = self.source[int(self.indices[index])]
        image = to_signed_unit(image)
        if self.random_flip and epoch_key is not None and self._is_flipped(epoch_key):
            image = image.flip(-1)
        return image, label

    def _is_flipped(self, key: EpochKey) -> bool:
        """Whether ``key``'s image is mirrored (the epoch's draws are computed once and kept)."""
        seed_epoch = (key.seed, key.epoch)
        if self._flips is None or self._flips[0] != seed_epoch:
            self._flips = (seed_epoch, flip_draws(key.seed, key.epoch, len(self)))
        return bool(self._flips[1][key.index])
