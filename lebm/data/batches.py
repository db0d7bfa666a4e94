"""What a batch holds, for every method and metric: the observations first."""

from __future__ import annotations

from typing import Any

from torch import Tensor


def batch_observations(batch: Any) -> Tensor:
    """The observations ``x`` of a batch: the batch itself or the first item of a tuple/list."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch
