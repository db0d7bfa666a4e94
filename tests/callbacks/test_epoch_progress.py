"""EpochProgress: a line per training epoch with its time, the time left and the metrics; every
script in experiments/ shows its progress. Device: CPU."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lebm.callbacks import EpochProgress
from lebm.models import LatentEBM, TiltedGaussianPrior
from lebm.nets import EnergyMLP, GaussianDecoder, MLPGenerator
from lebm.samplers import Langevin
from tests.helpers.cli_runner import REPO
from tests.helpers.trainers import quiet_trainer


def images(n: int = 8) -> DataLoader:
    return DataLoader(TensorDataset(torch.rand(n, 1, 8, 8) * 2 - 1), batch_size=4)


@pytest.mark.usefixtures("one_thread")
def test_a_line_per_epoch_with_time_left_and_metrics(tmp_path: Path) -> None:
    prior = TiltedGaussianPrior(2, EnergyMLP(2, hidden=8), sampler=Langevin(2, 0.3))
    model = LatentEBM(GaussianDecoder(MLPGenerator(2, (1, 8, 8), hidden=8)), prior, posterior_sampler=Langevin(2, 0.1))
    stream = io.StringIO()
    trainer = quiet_trainer(
        accelerator="cpu",
        default_root_dir=str(tmp_path),
        max_epochs=3,
        log_every_n_steps=1,
        inference_mode=False,
        num_sanity_val_steps=0,
        callbacks=[EpochProgress(stream)],
    )
    trainer.fit(model, images(), images())
    lines = stream.getvalue().splitlines()
    assert [line.split(" | ")[0] for line in lines] == ["lebm: epoch 1/3", "lebm: epoch 2/3", "lebm: epoch 3/3"]
    assert re.search(r"\| left ~\d+ s \|", lines[0]) and "left ~0 s" in lines[-1]
    assert all("train/decoder_nll " in line and "val/nll " in line for line in lines)


def test_every_experiment_shows_its_progress() -> None:
    for script in sorted((REPO / "experiments").glob("*.py")):
        text = script.read_text()
        if script.name in ("records.py", "script.py"):  # the modules the scripts share, not experiments
            continue
        trains = re.search(r'"lebm",\s*"fit"', text) is not None
        shows = "EPOCH_LINES" in text if trains else ("with_progress" in text or "flush=True" in text)
        assert shows, f"{script.name} runs without showing its progress"
        assert 'enable_progress_bar", "false"' not in text, f"{script.name} turns the bar off without a line per epoch"
