"""Validate after the last training epoch, whatever ``check_val_every_n_epoch`` says.

Lightning validates after epoch ``e`` (0-based) when ``(e + 1) % check_val_every_n_epoch == 0``,
so a run of ``max_epochs`` that is not a multiple of it ends without the final model's numbers
(``lebm fit -c quickstart --trainer.max_epochs 1`` would validate never). Every lebm method adds
:class:`ValidateLastEpoch` (``Method.configure_callbacks``): it sets the Trainer's
``check_val_every_n_epoch`` to 1 at the start of the last epoch of a ``max_epochs`` run, and after
a batch whose stop request Lightning grants (``trainer.should_stop`` once ``min_epochs`` and
``min_steps`` are met: multi-stage NCE's last stage, early stopping), at once or with the epoch's
last batch, where Lightning validates before it stops. It gives the setting back once that
validation ends (or the run does, normally or by an exception). A run that stops on ``max_steps``
within an epoch validates as Lightning decides.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch import Callback

from lebm.models.training_end import stop_granted, training_stops


class ValidateLastEpoch(Callback):
    """Make the last epoch of a run validate (see the module docstring)."""

    def __init__(self) -> None:
        self._given_every: int | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs not in (None, -1) and epoch == trainer.max_epochs
        if last and epoch % max(trainer.check_val_every_n_epoch or 1, 1) != 0:
            self._validate_this_epoch(trainer)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: object, batch: object, batch_idx: int
    ) -> None:
        last_batch = bool(getattr(trainer.fit_loop.epoch_loop.batch_progress, "is_last_batch", False))
        if trainer.should_stop and (training_stops(trainer) or (last_batch and stop_granted(trainer, epochs_ending=1))):
            self._validate_this_epoch(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._give_back(trainer)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._give_back(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._give_back(trainer)

    def _validate_this_epoch(self, trainer: L.Trainer) -> None:
        every = trainer.check_val_every_n_epoch
        if self._given_every is None and isinstance(every, int) and every > 1:
            self._given_every = every
            trainer.check_val_every_n_epoch = 1

    def _give_back(self, trainer: L.Trainer) -> None:
        if self._given_every is not None:
            trainer.check_val_every_n_epoch = self._given_every
            self._given_every = None
