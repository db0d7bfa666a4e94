"""SampleGrid and ReconstructionGrid: drawn every ``every_n_epochs`` epochs and always at the last one
(CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from trainers import quiet_trainer

from lebm.callbacks import ReconstructionGrid, SampleGrid
from lebm.models import LatentEBM, TiltedGaussianPrior
from lebm.nets import EnergyMLP, GaussianDecoder, MLPGenerator
from lebm.samplers import Langevin


def tiny_model() -> LatentEBM:
    prior = TiltedGaussianPrior(2, EnergyMLP(2, hidden=8), sampler=Langevin(2, 0.3))
    decoder = GaussianDecoder(MLPGenerator(2, (1, 8, 8), hidden=8))
    return LatentEBM(decoder, prior, posterior_sampler=Langevin(2, 0.1))


def images(n: int = 16) -> DataLoader:
    return DataLoader(TensorDataset(torch.rand(n, 1, 8, 8) * 2 - 1), batch_size=4)


def grid_epochs(folder: Path, key: str) -> list[int]:
    return sorted(int(path.stem.rsplit("epoch", 1)[1]) for path in (folder / "images").glob(f"{key}_epoch*.png"))


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ({"max_epochs": 5}, [2, 4]),  # (0-based names) the 3rd epoch, and the last
        ({"max_epochs": 6}, [2, 5]),  # the last epoch is a scheduled one: drawn once
        ({"max_epochs": 10, "max_steps": 12}, [1]),  # 4 batches an epoch, 2 steps a batch: ends within the 2nd epoch
    ],
)
def test_grids_come_every_n_epochs_and_at_the_last_one(tmp_path: Path, limits: dict, expected: list[int]) -> None:
    callbacks = [SampleGrid(n=4, every_n_epochs=3), ReconstructionGrid(n=4, every_n_epochs=3)]
    trainer = quiet_trainer(accelerator="cpu", default_root_dir=str(tmp_path), callbacks=callbacks, **limits)
    trainer.fit(tiny_model(), images(), images())
    assert grid_epochs(tmp_path, "samples") == expected
    assert grid_epochs(tmp_path, "reconstructions") == expected
