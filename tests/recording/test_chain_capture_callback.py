"""ChainCapture (device: CPU, through the replay emulator): the recipe switch reaches every sampler
of the model and of the other callbacks through the run-wide setting (no sampler attribute is
written), a run with it off records no chain, and the setting is restored when the run ends."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lebm.callbacks import ChainCapture
from lebm.models import LatentEBM, TiltedGaussianPrior
from lebm.nets import EnergyMLP, GaussianDecoder, MLPGenerator
from lebm.recording import capture_stats, chain_capture_enabled, iteration_capture, samplers_of
from lebm.samplers import Langevin
from lebm.testing.capture import emulate_on_cpu
from tests.helpers.trainers import quiet_trainer


class WithOwnSampler(L.Callback):
    """A callback holding a prior sampler of its own, as an FID callback does."""

    def __init__(self) -> None:
        self.sampler = Langevin(5, 0.3)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: LatentEBM) -> None:
        pl_module.prior.sample(8, sampler=self.sampler)


def fit(enabled: bool) -> tuple[LatentEBM, WithOwnSampler]:
    torch.manual_seed(0)
    model = LatentEBM(
        GaussianDecoder(MLPGenerator(3, [2], hidden=16, out_activation=None), 0.3),
        TiltedGaussianPrior(3, EnergyMLP(3, hidden=16), sampler=Langevin(5, 0.4)),
        posterior_sampler=Langevin(5, 0.1),
    )
    own = WithOwnSampler()
    trainer = quiet_trainer(
        max_epochs=2,
        accelerator="cpu",
        callbacks=[ChainCapture(enabled=enabled, report=True), own],
    )
    # the model's chains called by the method, not inline in a recorded iteration (on by default)
    with emulate_on_cpu(), iteration_capture(False):
        trainer.fit(model, DataLoader(TensorDataset(torch.randn(32, 2)), batch_size=8))
    return model, own


@pytest.mark.parametrize("enabled", [False, True])
def test_the_switch_reaches_the_models_and_the_callbacks_samplers(enabled: bool) -> None:
    model, own = fit(enabled)
    samplers = [model.posterior_sampler, model.prior.sampler, own.sampler]
    assert all(sampler.cuda_graph for sampler in samplers)  # the switch is run-wide, not written into samplers
    assert chain_capture_enabled()  # restored at teardown
    stats = capture_stats(samplers)
    if enabled:
        assert stats["captures"] == 3 and stats["replays"] > 3 and stats["eager_calls"] == 0
    else:
        assert stats["captures"] == 0 and stats["eager_calls"] > 0
    assert len(samplers_of(model, own)) == 3


class Fails(L.Callback):
    def on_train_batch_start(self, *args: object) -> None:
        raise RuntimeError("a run that fails")


def test_a_run_that_raises_restores_the_switch() -> None:
    """Lightning skips teardown when fit raises: the callback restores the switch on the exception."""
    model, _ = fit(True)  # a model to fit again
    trainer = quiet_trainer(max_epochs=1, accelerator="cpu", callbacks=[ChainCapture(enabled=False), Fails()])
    with pytest.raises(RuntimeError, match="a run that fails"):
        trainer.fit(model, DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=8))
    assert chain_capture_enabled()
