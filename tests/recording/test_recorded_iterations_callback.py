"""RecordedIterations (device: CPU, through the replay emulator): the recipe switch turns recorded
training iterations on or off for the run (off by default: each lebm method's default, captured
chains), and the previous setting is back when the run ends, also when it ends by an exception."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lebm.models import LatentEBM, TiltedGaussianPrior
from lebm.nets import EnergyMLP, GaussianDecoder, MLPGenerator
from lebm.recording import iteration_capture, iteration_capture_enabled
from lebm.recording.switch import iteration_capture_setting
from lebm.samplers import Langevin
from lebm.speed import RecordedIterations
from lebm.testing.capture import emulate_on_cpu
from tests.helpers.trainers import quiet_trainer


def model() -> LatentEBM:
    torch.manual_seed(0)
    return LatentEBM(
        GaussianDecoder(MLPGenerator(3, [2], hidden=16, out_activation=None), 0.3),
        TiltedGaussianPrior(3, EnergyMLP(3, hidden=16), sampler=Langevin(5, 0.4)),
        posterior_sampler=Langevin(5, 0.1),
    )


def data() -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(64, 2)), batch_size=8)


@pytest.mark.parametrize("enabled", [False, True])
def test_the_switch_sets_the_runs_recording_and_is_given_back(enabled: bool, one_thread) -> None:
    """The run's setting is the callback's, whatever the process had; the process's is back after it."""
    assert not iteration_capture_enabled() and iteration_capture_setting() is None  # off: each method's default
    trained = model()
    trainer = quiet_trainer(max_epochs=1, accelerator="cpu", callbacks=[RecordedIterations(enabled, report=True)])
    with emulate_on_cpu(), iteration_capture(not enabled):
        trainer.fit(trained, data())
        assert iteration_capture_enabled() is (not enabled)
    stats = trained.iteration_recorder.stats
    assert (stats.recordings >= 1 and stats.replays >= 4) if enabled else stats.replays == stats.recordings == 0


class Fails(L.Callback):
    def on_train_batch_start(self, trainer: L.Trainer, module: object, batch: object, index: int) -> None:
        if index == 4:
            raise RuntimeError("stop here")


def test_the_switch_is_given_back_when_the_run_fails(one_thread) -> None:
    trainer = quiet_trainer(max_epochs=1, accelerator="cpu", callbacks=[RecordedIterations(False), Fails()])
    with emulate_on_cpu(), pytest.raises(RuntimeError, match="stop here"):
        trainer.fit(model(), data())
    assert iteration_capture_setting() is None  # the process's setting (none: each method's default) is back


@pytest.mark.parametrize(
    ("shell", "expected"), [(None, None), ("1", True), ("on", True), ("0", False), ("2", None), ("ture", None)]
)
def test_recorded_iterations_are_off_unless_the_shell_turns_them_on(
    shell: str | None, expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``LEBM_RECORDED_ITERATIONS`` unset: each method's default (off for every lebm method: captured
    chains); 1 or on: on; 0 or off: off, for the process and the ones it starts (the variable is read
    when lebm is imported); any other value keeps the default and says so in one line."""
    import importlib.util
    import warnings

    from lebm.recording import switch

    if shell is None:
        monkeypatch.delenv(switch.ITERATION_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(switch.ITERATION_VARIABLE, shell)
    spec = importlib.util.spec_from_file_location("a_fresh_switch", switch.__file__)
    fresh = importlib.util.module_from_spec(spec)  # the module as a new process imports it; lebm's stays as it is
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spec.loader.exec_module(fresh)
    assert fresh.iteration_capture_enabled() is bool(expected)
    assert fresh.iteration_capture_enabled(default=True) is (True if expected is None else expected)
    lines = [str(warning.message) for warning in caught if "LEBM_RECORDED_ITERATIONS" in str(warning.message)]
    if shell in ("2", "ture"):
        assert lines == [f"LEBM_RECORDED_ITERATIONS={shell!r} is neither on (1, true, on, yes) nor off (0, false, "
                         "off, no): lebm keeps its default, off"]  # fmt: skip
    else:
        assert not lines
