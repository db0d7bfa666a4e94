"""lebm's DDP: the CLI picks it for several devices, plain DDP is refused with the fix, and
gradients are reduced per optimiser (the rank invariants are in the method contract suite)."""

from __future__ import annotations

import pytest
import torch
from jsonargparse import Namespace
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader, TensorDataset

from lebm.cli.app import _method_strategy, requested_processes
from lebm.models import LatentEBM, TiltedGaussianPrior
from lebm.nets import EnergyMLP, GaussianDecoder, MLPGenerator
from tests.helpers.trainers import quiet_trainer


@pytest.mark.parametrize(
    "trainer,expected",
    [
        (dict(strategy="auto", devices=2, accelerator="cpu"), "lebm_ddp"),
        (dict(strategy="auto", devices=1, accelerator="cpu"), "auto"),
        (dict(strategy="auto", devices=1, accelerator="cpu", num_nodes=2), "lebm_ddp"),
        (dict(strategy="ddp_spawn", devices=2, accelerator="cpu"), "lebm_ddp_spawn"),
        (dict(strategy="ddp", devices=2, accelerator="cpu"), "lebm_ddp"),
        (dict(strategy="single_device", devices=1, accelerator="cpu"), "single_device"),
    ],
)
def test_the_cli_runs_several_processes_on_lebm_ddp(trainer: dict, expected: str) -> None:
    assert _method_strategy(Namespace(**trainer)) == expected


def test_requested_processes_counts_devices_and_nodes() -> None:
    assert requested_processes("cpu", 3, 2) == 6
    assert requested_processes("cpu", "auto", None) == 1


@pytest.mark.slow
def test_plain_ddp_is_refused_before_training_with_the_fix(tmp_path) -> None:
    decoder = GaussianDecoder(MLPGenerator(2, [2], hidden=8, out_activation=None))
    model = LatentEBM(decoder, TiltedGaussianPrior(2, EnergyMLP(2, hidden=8)))
    trainer = quiet_trainer(
        strategy=DDPStrategy(start_method="spawn"), devices=2, accelerator="cpu", default_root_dir=str(tmp_path)
    )
    with pytest.raises(Exception, match="use strategy='lebm_ddp'"):
        trainer.fit(model, DataLoader(TensorDataset(torch.randn(32, 2)), batch_size=8))
