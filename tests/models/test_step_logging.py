"""Training values are handed to Lightning on the steps where something reads them (CPU).

Lightning's ``self.log`` costs host time at every call (lebm.training.cadence): a method hands its
step values over on the loggers' steps (``log_every_n_steps``), on the last batch of each epoch and
near ``max_steps``, and every value it hands over is that step's own. The divergence guard still
sees every step.
"""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from test_latent_ebm import loader, small_model

from lebm.models import LatentEBM, TrainingDiverged
from tests.helpers.trainers import quiet_trainer


class Spy:
    """Records every step's values as the guard sees them, and every hand-over to Lightning."""

    def __init__(self, model: LatentEBM) -> None:
        self.checked: list[dict[str, float]] = []
        self.handed: list[int] = []
        check = model.guard.check
        log_dict = model.log_dict

        def spy_check(values, **kwargs):
            self.checked.append({k: float(v) for k, v in values.items() if torch.is_tensor(v) and v.numel() == 1})
            return check(values, **kwargs)

        def spy_log_dict(values, *args, **kwargs):
            step = len(self.checked)  # the 1-based step whose values go to Lightning
            if not self.handed or self.handed[-1] != step:  # one hand-over (bar values and the rest)
                self.handed.append(step)
            return log_dict(values, *args, **kwargs)

        model.guard.check = spy_check
        model.log_dict = spy_log_dict


def training_only(**settings) -> L.Trainer:
    """A CPU Trainer that trains and logs only (``settings`` add to it)."""
    defaults = dict(max_epochs=1, accelerator="cpu", inference_mode=False, limit_val_batches=0)
    return quiet_trainer(**{**defaults, **settings})


def fit(tmp_path: Path, batches: int, every: int, **settings) -> tuple[L.Trainer, Spy]:
    torch.manual_seed(0)
    model = small_model()
    spy = Spy(model)
    logger = CSVLogger(str(tmp_path), name="run", version=0)
    trainer = training_only(logger=logger, log_every_n_steps=every, **settings)
    trainer.fit(model, loader(n=16 * batches, batch_size=16))
    return trainer, spy


def logged_rows(tmp_path: Path, key: str) -> list[tuple[int, float]]:
    with open(tmp_path / "run" / "version_0" / "metrics.csv") as file:
        return [(int(row["step"]), float(row[key])) for row in csv.DictReader(file) if row.get(key)]


def test_values_go_to_lightning_on_the_logging_steps_and_the_last_batch_only(tmp_path: Path) -> None:
    trainer, spy = fit(tmp_path, batches=7, every=3)
    assert len(spy.checked) == 7  # the guard saw every step
    assert spy.handed == [3, 6, 7]  # logger steps 3 and 6, and the epoch's last batch
    rows = logged_rows(tmp_path, "train/decoder_nll")
    expected = [spy.checked[step - 1]["train/decoder_nll"] for step in (3, 6)]
    assert [value for _, value in rows] == pytest.approx(expected)
    last = spy.checked[-1]  # what epoch-end callbacks read is the last step's, not a stale one
    for key in ("train/decoder_nll", "train/prior_loss", "train/energy_neg"):
        assert float(trainer.callback_metrics[key]) == pytest.approx(last[key], rel=1e-6), key


def test_every_step_is_handed_over_with_log_every_n_steps_1(tmp_path: Path) -> None:
    _, spy = fit(tmp_path, batches=4, every=1)
    assert spy.handed == [1, 2, 3, 4]
    assert [value for _, value in logged_rows(tmp_path, "train/prior_loss")] == pytest.approx(
        [step["train/prior_loss"] for step in spy.checked]
    )


def test_a_run_that_ends_at_max_steps_hands_over_its_last_step(tmp_path: Path) -> None:
    trainer, spy = fit(tmp_path, batches=8, every=50, max_steps=5)  # a step is a batch
    assert len(spy.checked) == 5 and spy.handed[-1] == 5
    assert float(trainer.callback_metrics["train/decoder_nll"]) == pytest.approx(spy.checked[-1]["train/decoder_nll"])


def test_a_divergence_between_logging_steps_still_stops_training(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = small_model()
    energy = model.prior.energy_net
    original = energy.forward
    calls = {"n": 0}

    def poisoned(z):
        calls["n"] += 1
        out = original(z)
        return out * float("nan") if calls["n"] > 40 else out  # from the 3rd batch (about 17 calls a batch)

    energy.forward = poisoned
    trainer = training_only(log_every_n_steps=50)
    with pytest.raises(TrainingDiverged, match="not finite"):
        trainer.fit(model, loader(n=16 * 8, batch_size=16))


class StopAt(L.Callback):
    """Stops training after the batch with this index (as Lightning's Timer or EarlyStopping may)."""

    def __init__(self, batch: int) -> None:
        self.batch = batch

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.batch:
            trainer.should_stop = True


def test_a_step_after_which_training_stops_is_logged_with_its_own_values(tmp_path: Path) -> None:
    """A callback stops training after step 5, between logging steps: Lightning writes a row for a
    stopping step, which must hold step 5's values, not step 3's (the last handed over)."""
    trainer, spy = fit(tmp_path, batches=8, every=3, callbacks=[StopAt(4)])
    assert len(spy.checked) == 5 and spy.handed == [3, 5]
    rows = logged_rows(tmp_path, "train/decoder_nll")
    assert rows[-1][1] == pytest.approx(spy.checked[-1]["train/decoder_nll"])
    assert float(trainer.callback_metrics["train/decoder_nll"]) == pytest.approx(spy.checked[-1]["train/decoder_nll"])


def test_a_monitored_training_value_is_handed_over_at_every_step(tmp_path: Path) -> None:
    """ModelCheckpoint(every_n_train_steps=1, monitor=a train/ value) ranks checkpoints after every
    batch: it must read each step's own value."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    seen = []

    class Reader(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            seen.append(float(trainer.callback_metrics["train/prior_loss"]))

    checkpoint = ModelCheckpoint(str(tmp_path / "ckpt"), monitor="train/prior_loss", every_n_train_steps=1)
    _, spy = fit(tmp_path, batches=4, every=50, callbacks=[checkpoint, Reader()], enable_checkpointing=True)
    assert spy.handed == [1, 2, 3, 4]
    assert seen == pytest.approx([step["train/prior_loss"] for step in spy.checked])
