"""A Lightning callback that times each training epoch and writes what it saw as JSON.

    lebm fit -c recipes/quickstart.yaml \
        '--trainer.callbacks+={"class_path": "epoch_clock.EpochClock", "init_args": {"out": "epochs.json"}}'

with ``benchmarks/`` on ``PYTHONPATH`` (``benchmarks/gpu_check.py`` runs the quickstart this way). It
changes nothing in the run: it only reads clocks and counters. Per epoch it records the training
batches, ``train_seconds`` (from the epoch's start to the end of its last training batch: data
loading and training steps, no validation) and ``epoch_seconds`` (to ``on_train_epoch_end``:
validation, checkpoints and image grids included). On a GPU the clock does not synchronise after each
batch (that would drain the queue the host keeps ahead of the GPU and slow the very loop it times):
it records a CUDA event at the end of each batch and reads, at the end of the epoch, when the GPU
reached the last one; CUDA is synchronised at the start and the end of each epoch only. The file is
rewritten after every epoch, so a run cut off part-way leaves the epochs it finished.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch


def _sync(module: L.LightningModule) -> None:
    """Wait for the module's CUDA device, so that a clock reading covers the work queued before it."""
    if module.device.type == "cuda":
        torch.cuda.synchronize(module.device)


def _chain_calls(module: L.LightningModule) -> dict[str, int] | None:
    """Captures, replays and eager chain calls of the module's samplers (None if lebm cannot say)."""
    try:
        from lebm.recording.cache import capture_stats, samplers_of

        return capture_stats(samplers_of(module))
    except Exception:  # noqa: BLE001 - a record without the counts beats a failed run
        return None


def _recorded_iterations(module: L.LightningModule) -> dict[str, int] | None:
    """Recordings, replays, warm-ups and eager iterations of the module's recorded-iteration path
    (None for a module without one)."""
    recorder = getattr(module, "iteration_recorder", None)
    return None if recorder is None else recorder.stats.as_dict()


class EpochClock(L.Callback):
    """Wall-clock seconds and batch counts of every training epoch, written to ``out`` as JSON."""

    def __init__(self, out: str = "epoch_clock.json") -> None:
        self.out = out
        self.epochs: list[dict[str, Any]] = []
        self.device: str | None = None
        self._start = 0.0
        self._last_batch_end = 0.0
        self._batches = 0
        self._events: tuple[torch.cuda.Event, torch.cuda.Event] | None = None  # on a GPU: epoch start, last batch end

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _sync(pl_module)
        self._batches = 0
        self._events = None
        if pl_module.device.type == "cuda":
            self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            self._events[0].record()
        self._start = self._last_batch_end = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self._events is not None:
            self._events[1].record()  # no synchronisation: read at the end of the epoch
        else:
            self._last_batch_end = time.perf_counter()
        self._batches += 1
        if self.device is None:  # read during training: after fit Lightning moves the model to the CPU
            device = pl_module.device
            self.device = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _sync(pl_module)
        if self._events is not None and self._batches:
            start, last_batch = self._events
            self._last_batch_end = self._start + start.elapsed_time(last_batch) / 1000
        self.epochs.append(
            {
                "epoch": trainer.current_epoch,
                "batches": self._batches,
                "train_seconds": round(self._last_batch_end - self._start, 6),
                "epoch_seconds": round(time.perf_counter() - self._start, 6),
            }
        )
        self._write(pl_module)

    def _write(self, module: L.LightningModule) -> None:
        """Replace ``out`` with everything recorded so far (written beside it, then renamed)."""
        record: dict[str, Any] = {
            "device": self.device,
            "epochs": self.epochs,
            "chain_calls": _chain_calls(module),
            "recorded_iterations": _recorded_iterations(module),
        }
        if module.device.type == "cuda":
            record["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(module.device) / 2**20, 1)
        path = Path(self.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(record, indent=1) + "\n")
        os.replace(partial, path)
