"""HierarchicalSampleGrid: one PNG per latent layer, each varying only that layer."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from lebm.callbacks import HierarchicalSampleGrid
from lebm.models import JointHierarchicalEBM, LatentEBM, TiltedGaussianPrior
from lebm.nets import EnergyMLP, GaussianDecoder, HierarchicalGenerator, LadderEncoder, MLPGenerator
from lebm.samplers import Langevin
from tests.helpers.trainers import quiet_trainer


def trainer(tmp_path: Path, callback: L.Callback) -> L.Trainer:
    return quiet_trainer(max_epochs=1, default_root_dir=str(tmp_path), accelerator="cpu", callbacks=[callback])


def images(n: int = 16) -> DataLoader:
    return DataLoader(TensorDataset(torch.rand(n, 1, 8, 8) * 2 - 1), batch_size=8)


@pytest.mark.usefixtures("one_thread")
def test_one_grid_per_layer_whose_rows_vary_only_that_layer(tmp_path: Path) -> None:
    groups = [2, 2, 2]
    prior = TiltedGaussianPrior(6, EnergyMLP(6, hidden=8), sampler=Langevin(3, 0.3), groups=groups)
    decoder = GaussianDecoder(HierarchicalGenerator(groups, 1, 8, [8, 4, 4], [8]))
    model = JointHierarchicalEBM(decoder, prior, LadderEncoder(groups, 1, 8, [4, 4], [8]))
    trainer(tmp_path, HierarchicalSampleGrid(n=8, nrow=4)).fit(model, images())
    pictures = sorted(p.name for p in (tmp_path / "images").glob("hierarchical_samples_*.png"))
    assert pictures == [f"hierarchical_samples_{name}_epoch0000.png" for name in ("z1", "z2", "z3")]
    grid = np.asarray(Image.open(tmp_path / "images" / pictures[0]))
    assert grid.dtype == np.uint8 and grid.shape[2] == 3 and grid.std() > 0


def test_a_method_without_layers_is_refused_at_set_up(tmp_path: Path) -> None:
    prior = TiltedGaussianPrior(4, EnergyMLP(4, hidden=8))
    model = LatentEBM(GaussianDecoder(MLPGenerator(4, [1, 8, 8], hidden=8)), prior)
    with pytest.raises(ValueError, match="HierarchicalSampleGrid needs a method with sample_layer"):
        trainer(tmp_path, HierarchicalSampleGrid()).fit(model, images())
