"""Callbacks that record what a run did, for tests that run the ``lebm`` command in this process
(``tests.helpers.cli_runner.run_cli``): give them as ``--trainer.callbacks+=tests.helpers.run_spies.<Name>``
and read the class's ``seen`` afterwards."""

from __future__ import annotations

from typing import Any, ClassVar

import lightning as L


class BatchCounter(L.Callback):
    """Counts the training and validation batches of each epoch (sanity checks left out)."""

    seen: ClassVar[dict[str, list[int]]] = {}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        BatchCounter.seen = {"train": [], "val": []}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seen["train"].append(0)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.seen["train"][-1] += 1

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.seen["val"].append(0)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not trainer.sanity_checking:
            self.seen["val"][-1] += 1


class LoggerConfigSpy(L.Callback):
    """Keeps the config of the run's W&B logger (``wandb.Run.config``) as it is at the end of training."""

    seen: ClassVar[dict[str, Any]] = {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        config = trainer.logger.experiment.config
        LoggerConfigSpy.seen = {key: config[key] for key in config}


class ProgressBarSpy(L.Callback):
    """Keeps the names the progress bar shows (``trainer.progress_bar_metrics``) when fit ends."""

    seen: ClassVar[set[str]] = set()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        ProgressBarSpy.seen = set(trainer.progress_bar_metrics)
