"""Latent groups: a flat latent vector split into named per-layer groups.

A multi-layer generator has one latent per layer; the joint EBM prior of Cui, Wu & Han (ICCV 2023)
sits on their concatenation. Methods, priors and samplers keep working on flat ``(B, total)``
tensors; a :class:`LatentGroups` layout says which columns belong to which layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lebm.config import Configurable


class LatentGroups(Configurable):
    """The layout of a flat latent ``(B, total)`` as consecutive groups, bottom layer first.

    ``LatentGroups([10, 10, 10])`` describes ``z = [z_1, z_2, z_3]`` with ``z_1 = z[:, 0:10]``.

    Args:
        sizes: the size of each group, bottom (finest, ``z_1``) first.
        names: one name per group; default ``z1``, ``z2``, ...
    """

    def __init__(self, sizes: Sequence[int], names: Sequence[str] | None = None) -> None:
        sizes = [int(size) for size in sizes]
        if not sizes or any(size < 1 for size in sizes):
            raise ValueError(f"LatentGroups needs at least one group and every size >= 1, got {sizes}")
        names = [f"z{i + 1}" for i in range(len(sizes))] if names is None else [str(name) for name in names]
        if len(names) != len(sizes) or len(set(names)) != len(names):
            raise ValueError(f"LatentGroups needs one distinct name per group: sizes {sizes}, names {names}")
        self.sizes = sizes
        self.names = names
        self.offsets = [sum(sizes[:i]) for i in range(len(sizes))]

    @property
    def total(self) -> int:
        """The flat latent size, ``sum(sizes)``."""
        return sum(self.sizes)

    def __len__(self) -> int:
        return len(self.sizes)

    def index(self, layer: int | str) -> int:
        """The position of ``layer`` (an index, negative allowed, or a name)."""
        if isinstance(layer, str):
            if layer not in self.names:
                raise KeyError(f"no latent group {layer!r}; groups are {self.names}")
            return self.names.index(layer)
        if not -len(self.sizes) <= layer < len(self.sizes):
            raise IndexError(f"latent group {layer} out of range for {len(self.sizes)} groups")
        return layer % len(self.sizes)

    def columns(self, layer: int | str) -> slice:
        """The columns of ``layer`` in the flat latent."""
        i = self.index(layer)
        return slice(self.offsets[i], self.offsets[i] + self.sizes[i])

    def split(self, z: Tensor) -> list[Tensor]:
        """``(B, total)`` -> one ``(B, size_i)`` view per group, bottom first."""
        self._check(z)
        return [z[:, self.columns(i)] for i in range(len(self.sizes))]

    def join(self, parts: Sequence[Tensor]) -> Tensor:
        """Inverse of :meth:`split`: per-group ``(B, size_i)`` tensors -> ``(B, total)``."""
        if len(parts) != len(self.sizes):
            raise ValueError(f"expected {len(self.sizes)} latent groups, got {len(parts)}")
        for part, size, name in zip(parts, self.sizes, self.names, strict=False):
            if part.dim() != 2 or part.shape[1] != size:
                raise ValueError(f"latent group {name} must be (B, {size}), got {tuple(part.shape)}")
        return torch.cat(list(parts), dim=1)

    def replace(self, z: Tensor, layer: int | str, values: Tensor) -> Tensor:
        """A copy of ``z`` ``(B, total)`` whose group ``layer`` is ``values`` ``(B, size)``
        (broadcast over the batch if ``(size,)``)."""
        self._check(z)
        out = z.clone()
        out[:, self.columns(layer)] = values
        return out

    def _check(self, z: Tensor) -> None:
        if z.dim() != 2 or z.shape[1] != self.total:
            raise ValueError(f"expected a flat latent (B, {self.total}) for groups {self.sizes}, got {tuple(z.shape)}")

    def __repr__(self) -> str:
        return f"LatentGroups({dict(zip(self.names, self.sizes, strict=False))})"
