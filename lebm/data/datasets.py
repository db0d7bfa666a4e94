"""Small torch Datasets that turn stored uint8 images into float model inputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

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

    Items: ``(image float32 (C, H, W) in [-1, 1], label)``; with ``random_flip`` each image is
    mirrored left-right with probability 1/2 (training data only).

    Args:
        source: dataset whose items are ``(uint8 (C, H, W), label)``.
        indices: positions in ``source`` that make up this subset.
        random_flip: apply the random horizontal flip.
    """

    def __init__(self, source: Dataset, indices: Sequence[int] | Tensor, random_flip: bool = False) -> None:
        self.source = source
        self.indices = torch.as_tensor(indices, dtype=torch.int64)
        self.random_flip = random_flip

    def __len__(self) -> int:
        return int(self.indices.numel())

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor | int]:
        image, label = self.source[int(self.indices[index])]
        image = to_signed_unit(image)
        if self.random_flip and bool(torch.rand(()) < 0.5):
            image = image.flip(-1)
        return image, label
