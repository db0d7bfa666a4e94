"""Save a resumable checkpoint when a run is interrupted (SIGTERM from SLURM or ``kill``, Ctrl+C)."""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException


class InterruptCheckpoint(L.Callback):
    """On SIGTERM or Ctrl+C during ``fit``, stop at the end of the current batch and save
    ``<checkpoint dir>/last.ckpt``, so that ``--ckpt_path last`` continues the run exactly.

    - SIGTERM: Lightning notices it and stops at the end of the batch (``SIGTERMException``);
      this callback then saves the checkpoint (the ``lebm`` command exits with code 143).
    - Ctrl+C (SIGINT): the first press asks to stop at the end of the batch; a second press stops
      at once, as usual (nothing is saved then, the state could be mid-update).

    The checkpoint goes where the trainer's ``ModelCheckpoint`` writes ``last.ckpt``. The ``lebm``
    CLI adds this callback to every ``fit`` that has a ``ModelCheckpoint``.
    """

    def __init__(self) -> None:
        self._interrupt_requested = False
        self._previous_handler: Any = None

    # ------------------------------------------------------------------------------- Ctrl+C
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._interrupt_requested = False
        try:
            self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:  # not the main thread: keep the default behaviour
            self._previous_handler = None

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self._interrupt_requested:
            raise KeyboardInterrupt
        self._interrupt_requested = True
        rank_zero_info("\nStopping at the end of this batch and saving a checkpoint (Ctrl+C again to stop now) ...")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self._interrupt_requested:
            raise KeyboardInterrupt

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None

    # --------------------------------------------------------------------------- the save
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        clean_stop = isinstance(exception, SIGTERMException) or (
            isinstance(exception, KeyboardInterrupt) and self._interrupt_requested
        )
        if not clean_stop or trainer.state.fn != "fit" or trainer.sanity_checking:
            return
        path = self.checkpoint_path(trainer)
        if path is None:
            return
        # the ModelCheckpoint owns this last.ckpt from now on: a resumed run overwrites it at its next save
        # instead of writing last-v1.ckpt beside it (Lightning versions a "last" file it did not write)
        trainer.checkpoint_callback.last_model_path = path
        trainer.save_checkpoint(path, weights_only=False)  # whole; said: Lightning notes no default
        rank_zero_info(f"Saved a resumable checkpoint at {path}: continue with --ckpt_path last")

    @staticmethod
    def checkpoint_path(trainer: L.Trainer) -> str | None:
        """Where the trainer's ``ModelCheckpoint`` keeps ``last.ckpt`` (None without one)."""
        callback = trainer.checkpoint_callback
        if not isinstance(callback, ModelCheckpoint) or callback.dirpath is None:
            return None
        return os.path.join(callback.dirpath, callback.CHECKPOINT_NAME_LAST + callback.FILE_EXTENSION)
