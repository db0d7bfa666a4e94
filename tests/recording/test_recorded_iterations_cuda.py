"""Recorded training iterations on a GPU (device: CUDA; marked ``gpu``, skipped without CUDA).

Every method trains with whole iterations recorded as CUDA graphs and replayed, and ends where its
eager path ends, to rounding: TF32 is off in this file, and the recorded Adam step computes what
torch's eager (multi-tensor) Adam computes in another order. The bf16 run is checked for replays
and finite weights. On a CPU the same runs are exact under the emulator
(``tests/recording/test_recorded_iterations.py``).
"""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lebm.models import Method
from lebm.recording import iteration_capture
from tests.helpers.trainers import quiet_trainer
from tests.models.cases import CASES, toy_loader
from tests.models.test_chain_capture_methods import without_recording

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("exact_float32")]  # TF32 off: tests/conftest.py

METHODS = [case for case in CASES if case.in_library]
#: Recorded against eager float32 training: largest absolute difference of any parameter after 20 iterations.
TOLERANCE = 1e-3


def built(case: Any) -> Method:
    """The case's model without its recording wrappers; a multi-stage prior keeps one stage for
    the run (a stage per iteration would end training after its three stages)."""
    model = without_recording(case.build())
    if hasattr(model, "stage_schedule"):
        model.stage_schedule = [40] * model.prior.n_stages
    return model


def fit(model: Method, recorded: bool, **settings: Any) -> Method:
    torch.manual_seed(7)
    options: dict[str, Any] = dict(max_epochs=2, accelerator="gpu", devices=1, limit_val_batches=1)
    options.update(settings)
    trainer = quiet_trainer(num_sanity_val_steps=0, **options)
    with iteration_capture(recorded):
        trainer.fit(model, toy_loader(n_batches=10), toy_loader(1, seed=1))
    model.finished = {  # type: ignore[attr-defined]
        "global_step": trainer.global_step,
        "rates": [group["lr"] for optimizer in trainer.optimizers for group in optimizer.param_groups],
        "moments": [
            state["exp_avg"].detach().cpu() for optimizer in trainer.optimizers for state in optimizer.state.values()
        ],
    }
    return model


@pytest.mark.parametrize("case", METHODS, ids=lambda case: case.name)
def test_recorded_iterations_replay_on_a_gpu_and_train_as_the_eager_path(case) -> None:
    torch.manual_seed(0)
    eager = built(case)
    recorded = copy.deepcopy(eager)
    fit(eager, False)
    fit(recorded, True)
    stats = recorded.iteration_recorder.stats
    assert stats.recordings >= 1 and stats.replays >= 8 and stats.eager == 0, stats
    for (name, left), right in zip(eager.state_dict().items(), recorded.state_dict().values(), strict=True):
        if left.is_floating_point():
            assert (left - right).abs().max() <= TOLERANCE * (1 + left.abs().max()), name
    assert recorded.finished["global_step"] == eager.finished["global_step"] == 20
    assert recorded.finished["rates"] == eager.finished["rates"]
    for left, right in zip(eager.finished["moments"], recorded.finished["moments"], strict=True):
        assert (left - right).abs().max() <= TOLERANCE * (1 + left.abs().max())


@pytest.mark.parametrize("case", METHODS, ids=lambda case: case.name)
def test_recorded_iterations_in_bf16_replay_and_stay_finite(case) -> None:
    torch.manual_seed(0)
    model = fit(built(case), True, precision="bf16-mixed")
    stats = model.iteration_recorder.stats
    assert stats.recordings >= 1 and stats.replays >= 8, stats
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


class StepValues(L.Callback):
    """Every training step's logged ``train/`` values, copied to the host once the step is over."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for optimizer in trainer.optimizers:  # the weights stay put: only the random draws change the values
            for group in optimizer.param_groups:
                group["lr"] = 0.0

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
        self.steps.append(values)


def one_batch_repeated(n: int = 10) -> DataLoader:
    """The same 16 toy points ``(16, 2)`` as each of ``n`` batches."""
    (x,) = next(iter(toy_loader(1)))
    return DataLoader(TensorDataset(x.repeat(n, 1)), batch_size=len(x))


def step_values(model: Method, recorded: bool) -> list[dict[str, float]]:
    """The logged values of 10 iterations on one batch at learning rate 0, on the GPU."""
    torch.manual_seed(7)
    values = StepValues()
    trainer = quiet_trainer(
        max_epochs=1, accelerator="gpu", devices=1, limit_val_batches=0, log_every_n_steps=1, callbacks=[values]
    )
    with iteration_capture(recorded):
        trainer.fit(model, one_batch_repeated())
    return values.steps


@pytest.mark.parametrize("case", METHODS, ids=lambda case: case.name)
def test_two_replays_of_one_recording_draw_different_chain_noise(case) -> None:
    """Same batch, weights held still: a replay that drew its recording's noise again would log the
    recording's values again. The replays log what the eager path logs, step by step, and differ."""
    torch.manual_seed(0)
    eager_model = built(case)
    recorded_model = copy.deepcopy(eager_model)
    eager, recorded = step_values(eager_model, False), step_values(recorded_model, True)
    stats = recorded_model.iteration_recorder.stats
    assert stats.recordings >= 1 and stats.replays >= 5 and stats.eager == 0, stats
    replayed = recorded[-5:]  # the last iterations: every one of them a replay of one recording
    varying = [name for name in replayed[0] if len({round(step[name], 6) for step in replayed}) > 1]
    assert varying, f"every replay logged the same values: {replayed[:2]}"
    for eager_step, recorded_step in zip(eager, recorded, strict=True):
        for name in varying:
            assert abs(eager_step[name] - recorded_step[name]) <= TOLERANCE * (1 + abs(eager_step[name])), name


def test_a_recorded_runs_checkpoint_keeps_the_adam_step_counts_on_the_host(tmp_path) -> None:
    """A recorded Adam step keeps its count on the GPU; the checkpoint holds it where torch's own
    Adam keeps it, on the CPU, so the file reads the same whichever way the run trained."""
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint

    class StepDevices(Callback):
        """The step counts' devices at the end of training: after ``fit`` returns, Lightning's
        teardown has moved the optimiser state to the CPU, so it must be read before."""

        devices: list[str] = []

        def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            states = [state for optimizer in trainer.optimizers for state in optimizer.state.values()]
            self.devices = [state["step"].device.type for state in states]

    torch.manual_seed(0)
    saving = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=-1, every_n_epochs=1)
    watch = StepDevices()
    model = fit(built(METHODS[0]), True, max_epochs=2, callbacks=[saving, watch], enable_checkpointing=True)
    stats = model.iteration_recorder.stats
    assert stats.recordings == 1 and stats.replays >= 14, stats  # the first epoch's checkpoint kept the key
    live = watch.devices
    assert live and all(device == "cuda" for device in live), live  # the recorded step's own
    saved = torch.load(tmp_path / "last.ckpt", map_location=None, weights_only=True)["optimizer_states"]
    steps = [values["step"] for state in saved for values in state["state"].values()]
    assert len(steps) == len(live) and all(step.device.type == "cpu" for step in steps), [s.device for s in steps]
