"""Checks of what users hand the Python API (``generate``, ``infer``, ``reconstruct``, ``score``,
``prior.sample``): each mistake gets a message with the fix instead of a torch error from deep inside
a chain, and results that are not finite get a warning."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from lebm.samplers import Sampler


def check_count(n: Any, what: str = "generate") -> int:
    """``n`` as a number of samples (an int >= 1)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{what}(n) takes a whole number of samples n >= 1, got {n!r}")
    return n


def check_sampler(sampler: Any) -> Sampler | None:
    """``sampler`` when it is None or a :class:`lebm.samplers.Sampler`."""
    if sampler is not None and not isinstance(sampler, Sampler):
        raise TypeError(
            f"sampler must be a lebm.samplers.Sampler, e.g. lebm.samplers.Langevin(n_steps=60, step_size=0.4), "
            f"got {sampler!r}"
        )
    return sampler


def warn_if_not_finite(values: Tensor, what: str) -> Tensor:
    """``values``, with a warning when some are NaN or infinite (a chain that diverged)."""
    if isinstance(values, Tensor) and values.is_floating_point() and not bool(torch.isfinite(values).all()):
        warnings.warn(
            f"{what} holds NaN or infinite values: a chain diverged (lower its step size) or the model's "
            "parameters are not finite",
            RuntimeWarning,
            stacklevel=3,
        )
    return values
