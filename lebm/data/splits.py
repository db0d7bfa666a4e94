"""Deterministic train / validation / test splits of an index range."""

from __future__ import annotations

import torch
from torch import Tensor


def resolve_count(size: float | int, total: int, name: str) -> int:
    """Turn a split size into a count: a float in [0, 1) is a fraction of ``total``, an int is a count.

    Raises:
        ValueError: negative sizes, fractions >= 1, counts above ``total``, or booleans.
    """
    if isinstance(size, bool) or not isinstance(size, (int, float)):
        raise ValueError(f"{name} must be a fraction in [0, 1) or a count, got {size!r}")
    if isinstance(size, float):
        if not 0.0 <= size < 1.0:
            count = (
                f"; a count is a whole number without a decimal point ({int(size)})"
                if size >= 1 and size.is_integer()
                else ""
            )
            raise ValueError(f"{name} as a fraction must lie in [0, 1), got {size}{count}")
        return int(round(size * total))
    if size < 0 or size > total:
        raise ValueError(f"{name}={size} must be a count between 0 and the pool size {total}")
    return size


def random_split_indices(total: int, counts: list[int], seed: int) -> list[Tensor]:
    """Randomly partition ``range(total)`` into pieces of the given sizes plus a remainder.

    Args:
        total: number of items.
        counts: sizes of the leading pieces (e.g. [n_val, n_test]).
        seed: seed of the permutation; equal seeds give equal splits.

    Returns:
        ``len(counts) + 1`` sorted int64 index tensors (the last one holds the remaining items).
    """
    if sum(counts) > total:
        raise ValueError(f"split sizes {counts} add up to more than the {total} available items")
    generator = torch.Generator().manual_seed(seed)
    permutation = torch.randperm(total, generator=generator)
    pieces, start = [], 0
    for count in counts:
        pieces.append(permutation[start : start + count].sort().values)
        start += count
    pieces.append(permutation[start:].sort().values)
    return pieces
