"""What recorded iterations must key on and read in time (device: CPU, the strict replay emulator).

Each case is a way a recording could replay stale or read its guard late, with the run that shows
it: a limit of the guard that applies from a later epoch, a one-off spike the host must still see
within :data:`~lebm.recording.recorded_iteration.GUARD_READ_EVERY` iterations, a three-batch
accumulation window, a clipping hyperparameter set mid-run, and a key that changes now and then
(never a churn that turns recording off). Each run is compared with the eager path.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch
from test_recorded_iterations import METHODS, assert_replayed, assert_same, build
from test_recorded_iterations_safety import AtStep, Scaled, both_ways, latent_ebm
from torch.utils.data import DataLoader, TensorDataset

from lebm.models import LatentEBM
from lebm.recording import iteration_capture
from lebm.recording.recorded_iteration import CHURN_LIMIT, GUARD_READ_EVERY
from lebm.testing.capture import emulate_on_cpu
from lebm.training.guard import DivergenceGuard, TrainingDiverged
from tests.helpers.trainers import quiet_trainer
from tests.models.cases import toy_loader

#: Batches per epoch of the spiking toy, and the batch of each epoch scaled by 10: its decoder NLL
#: reads about 1,300 where the others read about 13, and the weights stay finite.
EPOCH, SPIKE = 30, 5


def spiking_loader() -> DataLoader:
    x = torch.cat([batch[0] for batch in toy_loader(n_batches=EPOCH)])
    x[SPIKE * 16 : (SPIKE + 1) * 16] *= 10
    return DataLoader(TensorDataset(x), batch_size=16)


def stopped(recorded: bool) -> tuple[int, str]:
    """The global step at which a run whose guard limits the decoder NLL to 100 from epoch 1 on
    stops (the spike of epoch 0 is allowed, that of epoch 1 is not), and the message."""
    model = build(METHODS[0])
    model.guard = DivergenceGuard({"train/decoder_nll": 100.0}, after_epoch=1)
    trainer = quiet_trainer(max_epochs=3, accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0)
    with emulate_on_cpu(), iteration_capture(recorded), pytest.raises(TrainingDiverged) as stop:
        trainer.fit(model, spiking_loader())
    return trainer.global_step, str(stop.value)


def test_a_limit_from_a_later_epoch_stops_a_one_off_spike_within_the_guards_read(one_thread) -> None:
    """Epoch 0's recordings hold no limit; epoch 1 (the guard's part of the key turns) records
    with it; the spike of epoch 1, one replayed iteration among normal ones, sets the sticky device
    flag, and the host reads it within GUARD_READ_EVERY iterations, not at the epoch's end."""
    eager_step, _ = stopped(recorded=False)
    recorded_step, message = stopped(recorded=True)
    assert eager_step == EPOCH + SPIKE + 1  # the eager guard stops at the spike of epoch 1
    assert eager_step <= recorded_step < eager_step + GUARD_READ_EVERY, (eager_step, recorded_step)
    assert "recorded iterations" in message


def test_a_three_batch_accumulation_window_replays_each_position_as_eagerly(one_thread) -> None:
    """Each of the window's three positions (opening: gradients zeroed; middle; stepping: the step
    counted) is its own recording: 20 batches end where the eager path ends, step count included."""
    eager, recorded, model, lines = both_ways(latent_ebm, accumulate_grad_batches=3, max_epochs=2)
    assert_same(eager, recorded)
    assert not lines
    assert_replayed(model, at_least=6)
    assert int(recorded["global step"]) == 8  # 2 epochs of 10 batches in windows of 3 (an epoch's last window: 1)


def test_a_clipping_hyperparameter_set_mid_run_is_replayed_with_it(one_thread) -> None:
    """``model.hparams.decoder_grad_clip`` set at step 5 (a callback, a user's hand): the key holds
    the hyperparameters, so the next iterations record anew and clip, as eagerly."""
    clip = lambda: [AtStep(5, lambda t, m: m.hparams.update(decoder_grad_clip=1e-3))]  # noqa: E731
    eager, recorded, model, lines = both_ways(latent_ebm, clip, max_epochs=2)
    assert_same(eager, recorded)
    assert not lines
    assert_replayed(model, at_least=6)


def test_a_key_that_changes_now_and_then_keeps_replaying(one_thread, monkeypatch) -> None:
    """A private setting changed every 4th step over 30 steps: each change costs warm-ups and a
    recording (more than CHURN_LIMIT misses over the run), but never CHURN_LIMIT in a row, so
    recording stays on and every value's iterations replay. The limit made 12 (the library's is
    larger) keeps the run to three epochs; the longest run of misses here is 7 (an epoch's new
    learning rate next to a change)."""
    from lebm.recording import recorded_iteration

    churn_limit = 12
    assert churn_limit < CHURN_LIMIT
    monkeypatch.setattr(recorded_iteration, "CHURN_LIMIT", churn_limit)

    def scaled() -> LatentEBM:
        model = latent_ebm()
        model.__class__ = Scaled
        model._noise_scale = 1.0
        return model

    class EveryFourth(L.Callback):
        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, index: int) -> None:
            if trainer.global_step % 4 == 0:
                module._noise_scale = 1.0 + trainer.global_step / 1000

    eager, recorded, model, lines = both_ways(scaled, lambda: [EveryFourth()], max_epochs=3)
    assert_same(eager, recorded)
    stats = model.iteration_recorder.stats
    assert not lines and model.iteration_recorder.disabled is None
    assert stats.warmups + stats.recordings > churn_limit and stats.replays >= 5 and stats.eager == 0, stats
