"""Validate the model a fit ends with, whatever ``check_val_every_n_epoch`` and ``max_steps`` say,
or say in one line that it was not validated and how to score it.

Lightning validates after epoch ``e`` (0-based) when ``(e + 1) % check_val_every_n_epoch == 0``,
and after a stop request it grants, but not when ``max_steps`` ends a fit inside an epoch. So a run
of ``max_epochs`` that is not a multiple of the setting, or a short budget (``--trainer.max_steps 3``
of a recipe that validates every epoch), would end without the final model's numbers. Every lebm
method adds :class:`ValidateLastEpoch` (``Method.configure_callbacks``):

- at the start of the last epoch of a ``max_epochs`` run (or at the start of a fit resumed inside
  it) it sets ``check_val_every_n_epoch`` to 1;
- after a batch whose stop request Lightning grants (``trainer.should_stop`` once ``min_epochs`` and
  ``min_steps`` are met: ``max_time``'s timer, multi-stage NCE's last stage, early stopping), at once
  or with the epoch's last batch, where Lightning validates before it stops, it does the same;
- on the step that reaches ``max_steps`` of a Trainer that validates (a validation loader, a
  ``validation_step``, ``limit_val_batches > 0``) it makes the stop a request Lightning grants, so
  that Lightning's loop validates after that step, once (not again where the epoch's last batch
  validates anyway).

It gives the setting back when the fit ends (normally or by an exception), not at the end of a
validation: a last epoch that also validates mid-epoch (``val_check_interval`` < 1) still
validates at its end. Nor when the epoch ends: a user's ``ModelCheckpoint(monitor=...)``, which
Lightning runs after every other callback, reads the setting at the epoch's end to decide whether
the validation it waited for has come (given back earlier, it would save nothing).

The validation draws from the method's evaluation stream, as every validation, and runs before the
epoch-end checkpoint: that checkpoint's weights, optimisers and training streams are
those of the same run without it. A fit stopped by a signal (SIGTERM, Ctrl+C) is not validated: a
signal asks the run to stop now, its resumable checkpoint comes first, and a validation could
outlast a scheduler's grace period. A fit that ends without a validation of its final step (a
signal, a stop that ``min_epochs`` or ``min_steps`` refuse) says so in one line, with the command
that scores its last checkpoint.
"""

from __future__ import annotations

import os
import shlex

import lightning as L
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lebm.training.training_end import stop_granted, training_stops

#: The file the ``lebm`` command saves a run's config in, inside the run folder.
RUN_CONFIG = "config.yaml"


class ValidateLastEpoch(Callback):
    """Make the last epoch and the last step of a fit validate (see the module docstring)."""

    def __init__(self) -> None:
        self._given_every: int | None = None
        self._trained = False
        self._validated_at: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._trained, self._validated_at = False, None
        self.on_train_epoch_start(trainer, pl_module)  # a fit resumed inside its last epoch starts none

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._give_back(trainer)  # a fit that went on after all
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs not in (None, -1) and epoch == trainer.max_epochs
        if last and epoch % max(trainer.check_val_every_n_epoch or 1, 1) != 0:
            self._validate_this_epoch(trainer)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: object, batch: object, batch_idx: int
    ) -> None:
        self._trained = True
        if validates(trainer) and reaches_max_steps(trainer) and not trainer.received_sigterm:
            self._ask_for_validation(trainer)
        last_batch = bool(getattr(trainer.fit_loop.epoch_loop.batch_progress, "is_last_batch", False))
        if trainer.should_stop and (training_stops(trainer) or (last_batch and stop_granted(trainer, epochs_ending=1))):
            self._validate_this_epoch(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and _fitting(trainer):
            self._validated_at = trainer.global_step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._say_if_not_validated(trainer, "the fit ended without validating it")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._give_back(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._give_back(trainer)
        if isinstance(exception, SIGTERMException):
            self._say_if_not_validated(trainer, "stopped by SIGTERM")
        elif isinstance(exception, KeyboardInterrupt):
            self._say_if_not_validated(trainer, "stopped by Ctrl+C")

    def _ask_for_validation(self, trainer: L.Trainer) -> None:
        """Make this last step's stop a request Lightning grants (it then validates after the step);
        a request Lightning would not grant (``min_epochs``/``min_steps`` not met) is not made."""
        asked_before = trainer.should_stop
        trainer.should_stop = True
        if not stop_granted(trainer):
            trainer.should_stop = asked_before
            return
        if (trainer.current_epoch + 1) % max(trainer.check_val_every_n_epoch or 1, 1) != 0:
            self._validate_this_epoch(trainer)

    def _validate_this_epoch(self, trainer: L.Trainer) -> None:
        every = trainer.check_val_every_n_epoch
        if self._given_every is None and isinstance(every, int) and every > 1:
            self._given_every = every
            trainer.check_val_every_n_epoch = 1

    def _give_back(self, trainer: L.Trainer) -> None:
        if self._given_every is not None:
            trainer.check_val_every_n_epoch = self._given_every
            self._given_every = None

    def _say_if_not_validated(self, trainer: L.Trainer, why: str) -> None:
        """One line when this fit trained and its Trainer validates, but not its final step."""
        if not self._trained or not validates(trainer) or self._validated_at == trainer.global_step:
            return
        rank_zero_warn(
            f"the final model (step {trainer.global_step}) was not validated ({why}), so the run has no validation "
            f"value for it; {how_to_validate(trainer)}"
        )


def validates(trainer: L.Trainer) -> bool:
    """Whether the fit's Trainer validates: a validation loader, a ``validation_step`` and
    ``limit_val_batches > 0``."""
    return bool(trainer.enable_validation)


def reaches_max_steps(trainer: L.Trainer) -> bool:
    """Whether the step just taken reaches ``max_steps`` (the fit ends after it)."""
    max_steps = trainer.max_steps
    return max_steps is not None and max_steps >= 0 and trainer.global_step >= max_steps


def last_checkpoint_path(trainer: L.Trainer) -> str | None:
    """The checkpoint the Trainer's ``ModelCheckpoint`` keeps of the last model: ``last.ckpt`` (its
    path once saved, or where ``save_last`` will put it), else the one it kept last; None without."""
    callback = trainer.checkpoint_callback
    if not isinstance(callback, ModelCheckpoint) or callback.dirpath is None:
        return None
    if callback.last_model_path:
        return callback.last_model_path
    if not callback.save_last:
        return callback.best_model_path or None
    return os.path.join(callback.dirpath, callback.CHECKPOINT_NAME_LAST + callback.FILE_EXTENSION)


def how_to_validate(trainer: L.Trainer) -> str:
    """How to get the final model's validation values: ``lebm validate`` on the run's config and
    last checkpoint (a run of the ``lebm`` command), else ``trainer.validate`` on that checkpoint (a
    stop by SIGTERM or a first Ctrl+C saves the final model there)."""
    checkpoint = last_checkpoint_path(trainer)
    if checkpoint is None:
        return "the run keeps no checkpoint to score it from (give the Trainer a ModelCheckpoint)"
    config = os.path.join(trainer.default_root_dir, RUN_CONFIG)
    if os.path.isfile(config):
        command = f"lebm validate -c {shlex.quote(config)} --ckpt_path {shlex.quote(checkpoint)}"
        return f"score its last checkpoint with: {command}"
    return f"score its last checkpoint with trainer.validate(model, datamodule=..., ckpt_path={checkpoint!r})"


def _fitting(trainer: L.Trainer) -> bool:
    return str(getattr(trainer.state.fn, "value", trainer.state.fn)) == "fit"
