"""Floating-point operations of one training iteration, and how close a measured time is to the peak.

``IterationFlops`` counts the FLOPs of the matrix products and convolutions (forward and backward)
of one chosen training batch, with the formulas of ``torch.utils.flop_counter`` applied by a
dispatch mode that tracks no modules (``FlopCounterMode``'s module tracker cannot follow
``autograd.grad`` to a leaf, which every chain calls): every chain
step, the losses and the updates. ``peak_fraction`` turns a measured time into the fraction of a
GPU's dense bf16 peak that the iteration's FLOPs would take: ``flops / (peak * seconds)``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from lebm.recording import set_chain_capture

#: Dense (no sparsity) bf16 tensor-core peaks in FLOP/s, from the vendors' data sheets; the first
#: name contained in the device's name wins (so "H100 PCIe" before "H100").
BF16_PEAK_FLOPS = {
    "H200": 989.4e12,
    "H100 PCIe": 756.5e12,
    "H100": 989.4e12,  # SXM
    "A100": 312e12,
}


def bf16_peak(device_name: str) -> float | None:
    """The dense bf16 peak of the named GPU, or None if it is not in :data:`BF16_PEAK_FLOPS`."""
    return next((peak for name, peak in BF16_PEAK_FLOPS.items() if name in device_name), None)


def peak_fraction(flops: float, seconds: float, device_name: str) -> float | None:
    """``flops / (peak * seconds)`` on a known GPU, None elsewhere."""
    peak = bf16_peak(device_name)
    return None if peak is None or seconds <= 0 else flops / (peak * seconds)


class OperatorFlops(TorchDispatchMode):
    """Adds up ``torch.utils.flop_counter``'s FLOP formulas over every operator that runs."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += int(formula(*args, **kwargs, out_val=out))
        return out


class IterationFlops(L.Callback):
    """Counts the FLOPs of training batch ``batch_index`` (after compilation and warm-up). The
    counted batch runs its chains eagerly (a replayed CUDA graph dispatches no operators to count),
    and capture is switched back on after it."""

    def __init__(self, batch_index: int = 0) -> None:
        self.batch_index = batch_index
        self.flops: int | None = None
        self._mode: OperatorFlops | None = None
        self._previous = True

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, index: int) -> None:
        if index == self.batch_index:
            self._previous = set_chain_capture(False)
            self._mode = OperatorFlops()
            self._mode.__enter__()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self.flops = self._mode.total
            self._mode = None
            set_chain_capture(self._previous)
