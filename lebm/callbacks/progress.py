"""One line per training epoch, for logs that a progress bar would fill with carriage returns.

For runs whose output goes to a file (a cluster job, a script running ``lebm fit`` one run after
another): at the end of each training epoch (after its validation), global rank 0 prints::

    lebm: epoch 3/10 | 41.2 s | left ~4.8 min | train/decoder_nll 85.5 | val/nll 84.4 | val/auprc 0.412

the epoch's wall time, the time left at the mean pace so far (from ``max_epochs``, or ``max_steps``
when that ends the run first), the values the progress bar shows and every other ``val/`` value.
Give it beside ``--trainer.enable_progress_bar false``:
``--trainer.callbacks+=lebm.callbacks.EpochProgress``.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

import lightning as L

#: At most this many values on a line.
MAX_VALUES = 8


class EpochProgress(L.Callback):
    """Print one line per training epoch (see the module docstring).

    Args:
        stream: where to print (None: standard error, read at each print).
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self._fit_start: float | None = None
        self._epoch_start: float | None = None
        self._first_epoch = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.monotonic()
        self._first_epoch = trainer.current_epoch  # a resumed run starts later

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.monotonic()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or self._epoch_start is None or self._fit_start is None:
            return
        now = time.monotonic()
        done = trainer.current_epoch + 1
        parts = [f"epoch {done}/{_total_epochs(trainer)}", f"{now - self._epoch_start:.1f} s"]
        left = _seconds_left(trainer, (now - self._fit_start) / max(done - self._first_epoch, 1))
        if left is not None:
            parts.append(f"left ~{_duration(left)}")
        parts += [f"{name} {value:.4g}" for name, value in shown_values(trainer)]
        print("lebm: " + " | ".join(parts), file=self.stream or sys.stderr, flush=True)


def shown_values(trainer: L.Trainer) -> list[tuple[str, float]]:
    """The progress bar's values, then the other ``val/`` values of ``trainer.callback_metrics``."""
    values: dict[str, float] = {}
    for name, value in trainer.progress_bar_metrics.items():
        values[name] = float(value)
    for name, value in trainer.callback_metrics.items():
        if name.startswith("val/") and name not in values and getattr(value, "numel", lambda: 1)() == 1:
            values[name] = float(value)
    return [(name, value) for name, value in values.items() if name != "v_num"][:MAX_VALUES]


def _total_epochs(trainer: L.Trainer) -> str:
    return str(trainer.max_epochs) if trainer.max_epochs not in (None, -1) else "?"


def _seconds_left(trainer: L.Trainer, seconds_per_epoch: float) -> float | None:
    """The time left at ``seconds_per_epoch``, by epochs or by steps (whichever ends first)."""
    bounds = []
    if trainer.max_epochs not in (None, -1):
        bounds.append((trainer.max_epochs - trainer.current_epoch - 1) * seconds_per_epoch)
    batches = trainer.num_training_batches
    if trainer.max_steps not in (None, -1) and isinstance(batches, int) and batches > 0 and trainer.global_step > 0:
        bounds.append((trainer.max_steps - trainer.global_step) / batches * seconds_per_epoch)
    finite = [bound for bound in bounds if math.isfinite(bound)]
    return max(min(finite), 0.0) if finite else None


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
