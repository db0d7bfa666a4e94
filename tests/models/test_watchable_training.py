"""What every method shows while it trains, with no logger account: its main losses and the latest
validation value in the progress bar (``progress_bar_names``), a validation after the last epoch
whatever ``check_val_every_n_epoch`` says (``ValidateLastEpoch``), and the Trainer's setting given
back. Device: CPU."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
from cases import CASES, MethodCase, toy_loader

from tests.helpers.trainers import quiet_trainer

ids = [case.name for case in CASES]


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_the_progress_bar_shows_the_methods_losses_and_the_last_validation(case: MethodCase, tmp_path: Path) -> None:
    model = case.build()
    if not case.in_library:  # a user's method shows what it names (none by default)
        assert model.progress_bar_names == ()
    trainer = quiet_trainer(
        max_epochs=2,
        check_val_every_n_epoch=10,  # would never validate in a 2-epoch run: the last epoch validates anyway
        log_every_n_steps=1,
        default_root_dir=str(tmp_path),
        accelerator="cpu",
        inference_mode=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, toy_loader(), toy_loader(n_batches=1))
    shown = set(trainer.progress_bar_metrics)
    logged = {name for name in model.progress_bar_names if name in trainer.callback_metrics}
    assert logged or not case.in_library, f"{case.name} logs none of {model.progress_bar_names}"
    assert logged <= shown
    assert "val/nll" in shown and "val/nll" in trainer.callback_metrics  # the final validation ran
    chains = {name for name in trainer.callback_metrics if "chain" in name}
    assert not chains & shown  # the chain statistics go to the loggers, not the bar
    assert trainer.check_val_every_n_epoch == 10  # given back when the run ended


class ValidatedEpochs(L.Callback):
    def __init__(self) -> None:
        self.epochs: list[int] = []

    def on_validation_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.epochs.append(trainer.current_epoch)


def test_a_run_that_validates_every_epoch_validates_its_last_once(tmp_path: Path) -> None:
    seen = ValidatedEpochs()
    trainer = quiet_trainer(
        max_epochs=3,
        check_val_every_n_epoch=1,
        default_root_dir=str(tmp_path),
        accelerator="cpu",
        inference_mode=False,
        num_sanity_val_steps=0,
        callbacks=[seen],
    )
    trainer.fit(CASES[0].build(), toy_loader(n_batches=2), toy_loader(n_batches=1))
    assert seen.epochs == [0, 1, 2]


class StopAt(L.Callback):
    """Asks training to stop after the first batch (as EarlyStopping or a last stage would)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        trainer.should_stop = True


@pytest.mark.parametrize(("min_epochs", "validated"), [(0, [0]), (3, [2])])
def test_a_granted_stop_validates_once_and_an_ungranted_one_does_not(
    tmp_path: Path, min_epochs: int, validated: list[int]
) -> None:
    seen = ValidatedEpochs()
    trainer = quiet_trainer(
        max_epochs=6,
        min_epochs=min_epochs,
        check_val_every_n_epoch=10,
        default_root_dir=str(tmp_path),
        accelerator="cpu",
        inference_mode=False,
        num_sanity_val_steps=0,
        callbacks=[StopAt(), seen],
    )
    trainer.fit(CASES[0].build(), toy_loader(n_batches=2), toy_loader(n_batches=1))
    assert seen.epochs == validated  # the stop Lightning grants (after min_epochs) validates, no epoch before it
    assert trainer.check_val_every_n_epoch == 10
