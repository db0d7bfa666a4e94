"""Wall-clock timing shared by the benchmark scripts."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def timed_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds taken by ``fn()``, with CUDA synchronised before and after on a GPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start
