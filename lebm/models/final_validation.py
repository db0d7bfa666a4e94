"""Validate after the last training epoch, whatever ``check_val_every_n_epoch`` says.

Lightning validates after epoch ``e`` (0-based) when ``(e + 1) % check_val_every_n_epoch == 0``,
so a run of ``max_epochs`` that is not a multiple of it ends without the final model's numbers
(``lebm fit -c quickstart --trainer.max_epochs 1`` would validate never). Every lebm method adds
:class:`ValidateLastEpoch` (``Method.configure_callbacks``): it sets the Trainer's
``check_val_every_n_epoch`` to 1 at the start of the last epoch of a ``max_epochs`` run, and after a
batch that asks training to stop (``trainer.should_stop``: multi-stage NCE's last stage, early
stopping), where Lightning validates before it stops; it gives the setting back when the run ends
(normally or by an exception). A run that stops on ``max_steps`` within an epoch validates as
Lightning decides.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback


class ValidateLastEpoch(Callback):
    """Make the last epoch of a ``max_epochs`` run validate (see the module docstring)."""

    def __init__(self) -> None:
        self._given_every: int | None = None

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        every = trainer.check_val_every_n_epoch
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs not in (None, -1) and epoch == trainer.max_epochs
        if last and epoch % max(every or 1, 1) != 0:
            self._validate_this_epoch(trainer)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.should_stop:
            self._validate_this_epoch(trainer)

    def _validate_this_epoch(self, trainer: Any) -> None:
        every = trainer.check_val_every_n_epoch
        if self._given_every is None and isinstance(every, int) and every > 1:
            self._given_every = every
            trainer.check_val_every_n_epoch = 1

    def _give_back(self, trainer: Any) -> None:
        if self._given_every is not None:
            trainer.check_val_every_n_epoch = self._given_every
            self._given_every = None

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._give_back(trainer)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._give_back(trainer)
