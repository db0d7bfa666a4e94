"""What the grids' captions and the progress bar say: each grid names the chain that drew it (the
long-chain grid its own length, a method without a generation chain what it draws instead, and why
no long-chain grid comes), a reconstruction grid how the latents were inferred; Dual-MCMC's
captions name its test-time data chain and its inference network refined by its posterior chain,
and its bar shows its three losses. A grid that cannot be written warns once and training goes on.
Device: CPU."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import lebm.callbacks.images as images
from lebm.callbacks import EpochProgress, ReconstructionGrid, SampleGrid
from lebm.samplers import Langevin
from tests.helpers.trainers import quiet_trainer
from tests.models.cases import dual_mcmc, toy_loader


class Imager(L.LightningModule):
    """A method drawing 8x8 images with a known prior chain (or none) and posterior chain."""

    def __init__(self, generation: Langevin | None, source: str | None = None) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.generation_chain = generation
        self.posterior_sampler = Langevin(3, 0.1)
        self.encoder = None
        if source is not None:
            self.generation_source = source

    @property
    def generation_sampler(self) -> Langevin | None:
        return self.generation_chain

    def generate(self, n: int, sampler: Any = None) -> torch.Tensor:
        return torch.zeros(n, 1, 8, 8)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return x


def last_epoch_of(tmp_path: Path) -> SimpleNamespace:
    """The Trainer as a callback sees it at the end of the last of 5 epochs."""
    loader = DataLoader(TensorDataset(torch.zeros(4, 1, 8, 8)), batch_size=4)
    return SimpleNamespace(
        current_epoch=4, max_epochs=5, is_global_zero=True, default_root_dir=str(tmp_path), loggers=[],
        datamodule=None, val_dataloaders=loader,
    )  # fmt: skip


@pytest.fixture
def captions(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """The caption lines of every grid logged in the test, by its key."""
    seen: dict[str, list[str]] = {}
    pending: list[list[str]] = []
    with_caption, log_image = images.with_caption, images.log_image

    def captioned(image: Any, lines: list[str]) -> Any:
        pending.append(list(lines))
        return with_caption(image, lines)

    def logged(trainer: Any, key: str, image: Any) -> str:
        seen[key] = pending.pop()
        return log_image(trainer, key, image)

    monkeypatch.setattr(images, "with_caption", captioned)
    monkeypatch.setattr(images, "log_image", logged)
    return seen


def test_each_grid_names_the_chain_that_drew_it(tmp_path: Path, captions: dict[str, list[str]]) -> None:
    trainer = last_epoch_of(tmp_path)
    model = Imager(Langevin(7, 0.4))
    SampleGrid(n=4, long_chain_steps=200).on_train_epoch_end(trainer, model)
    ReconstructionGrid(n=4).on_train_epoch_end(trainer, model)
    assert captions == {
        "samples": ["epoch 4. Generated samples; chain: Langevin 7 steps, size 0.4"],
        "samples_langevin200": ["epoch 4. Generated samples; chain: Langevin 200 steps, size 0.4"],
        "reconstructions": [
            "epoch 4. Rows 1, 3, ...: validation images;",
            "rows 2, 4, ...: their reconstructions (posterior chain: Langevin 3 steps, size 0.1)",
        ],
    }
    assert sorted(path.name for path in (tmp_path / "images").iterdir()) == [
        "reconstructions_epoch0004.png", "samples_epoch0004.png", "samples_langevin200_epoch0004.png",
    ]  # fmt: skip


def test_a_method_without_a_generation_chain_says_why_no_long_chain_grid_comes(
    tmp_path: Path, captions: dict[str, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    source = "none, the amortizer's unconditional samples (4 ancestral steps)"
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        SampleGrid(n=4, long_chain_steps=200).on_train_epoch_end(last_epoch_of(tmp_path), Imager(None, source))
    assert captions == {"samples": [f"epoch 4. Generated samples; chain: {source}"]}
    said = [record.getMessage() for record in caplog.records if "SampleGrid" in record.getMessage()]
    assert said == [
        f"SampleGrid: no 200-step grid, as Imager's generate(n) runs no chain to lengthen (chain: {source})"
    ]


def test_dual_mcmc_captions_name_its_data_chain_and_its_refined_inference() -> None:
    """Dual-MCMC's samples are the generator's, revised by its test-time data chain; its
    reconstructions start at the inference network's latents and run its posterior chain."""
    model = dual_mcmc()  # test_data_sampler Langevin(5, 0.4); its posterior chain is replaced below
    model.posterior_sampler = Langevin(9, 0.1)
    assert images.sample_caption(2, model, None) == "epoch 2. Generated samples; chain: Langevin 5 steps, size 0.4"
    assert images.reconstruction_caption(2, model) == [
        "epoch 2. Rows 1, 3, ...: validation images;",
        "rows 2, 4, ...: their reconstructions (inference network, refined by the posterior chain: Langevin 9 steps, "
        "size 0.1)",
    ]


def test_a_damc_reconstruction_grid_names_its_amortizer_and_its_evaluation_chain() -> None:
    """DAMC's ``reconstruct`` starts at the amortizer's latents and runs its 10-step evaluation chain,
    not the training posterior chain."""
    from tests.models.cases import damc

    model = damc()
    model.evaluation_sampler, model.posterior_sampler = Langevin(10, 0.1, noise_std=0.0), Langevin(30, 0.1)
    assert images.reconstruction_caption(0, model)[1] == (
        "rows 2, 4, ...: their reconstructions (amortizer, refined by the posterior chain: Langevin 10 steps, size 0.1)"
    )


@pytest.mark.usefixtures("one_thread")
def test_dual_mcmcs_bar_and_epoch_line_show_its_three_losses(tmp_path: Path) -> None:
    model = dual_mcmc()
    stream = io.StringIO()
    trainer = quiet_trainer(
        accelerator="cpu", default_root_dir=str(tmp_path), max_epochs=1, log_every_n_steps=1,
        callbacks=[EpochProgress(stream)],
    )  # fmt: skip
    trainer.fit(model, toy_loader(n_batches=1), toy_loader(n_batches=1))
    losses = ["train/generator_loss", "train/inference_loss", "train/ebm_contrast"]
    assert list(model.progress_bar_names) == losses
    assert set(losses) <= set(trainer.progress_bar_metrics)
    line = stream.getvalue()
    assert all(f"{name} " in line for name in losses), line


def test_an_images_folder_that_cannot_be_written_warns_once_and_training_goes_on(tmp_path: Path) -> None:
    """A file named ``images`` where the grids' folder belongs: both grids of the epoch, and the
    next epoch's, go on without an error; one warning names the folder and the fix."""
    (tmp_path / "images").write_text("a file where the folder should be")
    trainer, model = last_epoch_of(tmp_path), Imager(Langevin(7, 0.4))
    with pytest.warns(UserWarning) as caught:
        for _ in range(2):
            SampleGrid(n=4).on_train_epoch_end(trainer, model)
            ReconstructionGrid(n=4).on_train_epoch_end(trainer, model)
    said = [str(warning.message) for warning in caught if "could not write" in str(warning.message)]
    assert said == [
        f"could not write samples_epoch0004.png into {tmp_path / 'images'} (a file of that name is in the way); "
        "training goes on without the pictures there (the loggers still get them): make "
        f"{tmp_path / 'images'} a writable folder to keep them"
    ]
