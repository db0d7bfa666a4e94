"""SampleGrid and ReconstructionGrid: drawn every ``every_n_epochs`` epochs and always at the last one
(CPU)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lebm.callbacks import ReconstructionGrid, SampleGrid
from lebm.callbacks.images import quiet_evaluation
from lebm.models import LatentEBM, TiltedGaussianPrior
from lebm.nets import EnergyMLP, GaussianDecoder, MLPGenerator
from lebm.samplers import Langevin
from tests.helpers.trainers import quiet_trainer


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
        ({"max_epochs": 10, "max_steps": 6}, [1]),  # 4 batches (steps) an epoch: ends within the 2nd epoch
    ],
)
def test_grids_come_every_n_epochs_and_at_the_last_one(tmp_path: Path, limits: dict, expected: list[int]) -> None:
    callbacks = [SampleGrid(n=4, every_n_epochs=3), ReconstructionGrid(n=4, every_n_epochs=3)]
    trainer = quiet_trainer(accelerator="cpu", default_root_dir=str(tmp_path), callbacks=callbacks, **limits)
    trainer.fit(tiny_model(), images(), images())
    assert grid_epochs(tmp_path, "samples") == expected
    assert grid_epochs(tmp_path, "reconstructions") == expected


class GlobalRandomState(L.Callback):
    """Records torch's global RNG state at the end of every training epoch."""

    def __init__(self) -> None:
        self.states: list[torch.Tensor] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.states.append(torch.get_rng_state())


@pytest.mark.usefixtures("one_thread")
def test_drawing_grids_leaves_the_random_numbers_training_draws_next_alone(tmp_path: Path) -> None:
    """Grids are drawn on some epochs only: drawing one (reading the validation batch, sampling)
    must not move torch's global RNG, or a run resumed after such an epoch would differ."""
    before, after = GlobalRandomState(), GlobalRandomState()
    callbacks = [before, SampleGrid(n=4), ReconstructionGrid(n=4), after]
    trainer = quiet_trainer(accelerator="cpu", default_root_dir=str(tmp_path), callbacks=callbacks, max_epochs=2)
    trainer.fit(tiny_model(), images(), images())
    assert len(before.states) == 2
    for state_before, state_after in zip(before.states, after.states, strict=True):
        assert torch.equal(state_before, state_after)


def test_drawing_grids_leaves_the_models_buffers_as_they_were() -> None:
    """A sampler that advances a buffer (spectral norm's power iteration, BatchNorm statistics)
    inside a grid leaves no trace on the model training goes on with."""
    model = L.LightningModule()
    model.register_buffer("power_iteration", torch.ones(3))
    model.norm = torch.nn.BatchNorm1d(3)
    with quiet_evaluation(model):
        model.power_iteration.add_(1.0)
        model.norm.train()
        model.norm(torch.randn(8, 3))
    assert torch.equal(model.power_iteration, torch.ones(3))
    assert torch.equal(model.norm.running_mean, torch.zeros(3)) and int(model.norm.num_batches_tracked) == 0


class CountingLangevin(Langevin):
    """Langevin that records the step count of every chain it runs."""

    runs: list[int] = []

    def run(self, target, z, *, generator=None):  # noqa: ANN001, ANN201
        type(self).runs.append(self.n_steps)
        return super().run(target, z, generator=generator)


@pytest.mark.usefixtures("one_thread")
def test_the_last_epoch_also_draws_samples_with_the_long_chain_named_in_the_file(tmp_path: Path) -> None:
    model = tiny_model()
    model.prior.sampler = CountingLangevin(2, 0.3)
    CountingLangevin.runs = []
    grid = SampleGrid(n=4, every_n_epochs=1, long_chain_steps=7)
    quiet_trainer(accelerator="cpu", default_root_dir=str(tmp_path), callbacks=[grid], max_epochs=2).fit(
        model, images()
    )
    assert grid_epochs(tmp_path, "samples") == [0, 1]
    assert grid_epochs(tmp_path, "samples_countinglangevin7") == [1]  # the last epoch only
    assert 7 in CountingLangevin.runs  # drawn by a chain of that length (the training chains run 2 steps)
    assert model.prior.sampler.n_steps == 2  # the model's own chain is left as it was


def test_grids_carry_a_caption_naming_rows_and_chain(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    callbacks = [SampleGrid(n=8, every_n_epochs=1), ReconstructionGrid(n=6, nrow=4, every_n_epochs=1)]
    trainer = quiet_trainer(accelerator="cpu", default_root_dir=str(tmp_path), callbacks=callbacks, max_epochs=1)
    trainer.fit(tiny_model(), images(), images())
    for key, rows_of_images in (("samples", 1), ("reconstructions", 4)):
        picture = np.asarray(Image.open(tmp_path / "images" / f"{key}_epoch0000.png").convert("L"))
        caption = picture[: picture.shape[0] - (rows_of_images * (32 + 2) + 2)]  # 8x8 images at 32 px, 2 px padding
        assert caption.shape[0] > 10 and (caption < 128).any()  # a strip of dark text above the grid
    grid = np.asarray(Image.open(tmp_path / "images" / "reconstructions_epoch0000.png").convert("L"))
    last_reconstruction_row = grid[-34:-2]
    assert (last_reconstruction_row[:, -68:] > 250).all()  # 6 images in rows of 4: the short rows padded white


def test_chain_descriptions_and_captions_wrap_to_the_grid() -> None:
    import numpy as np

    from lebm.callbacks.images import chain_description, with_caption

    assert chain_description(Langevin(20, 0.1)) == "Langevin 20 steps, size 0.1"
    assert chain_description(None) == "exact"
    grid = np.zeros((40, 300, 3), dtype=np.uint8)
    one_line = with_caption(grid, ["short"])
    wrapped = with_caption(grid, ["a caption much longer than three hundred pixels of text " * 2])
    assert one_line.shape[1] == wrapped.shape[1] == 300 and wrapped.shape[0] > one_line.shape[0] > 40
    assert with_caption(grid[:, :32], ["a one-image grid"]).shape[1] == 240  # widened to hold its caption
    assert (one_line[-40:] == grid).all()  # the grid itself below, untouched


def test_the_long_chain_runs_the_wrapped_sampler_at_its_current_step_size() -> None:
    from lebm.callbacks.images import chain_description, longer_chain
    from lebm.samplers import PersistentChains

    chain = Langevin(20, 0.4)
    chain.scale_step_size(0.5)  # as a divergence recovery lowers it
    wrapped = PersistentChains(chain, [2], buffer_size=8)
    longer = longer_chain(wrapped, 200)
    assert type(longer) is Langevin and longer.n_steps == 200 and longer.current_step_size() == 0.2
    assert chain.n_steps == 20  # the model's own chain is left as it was
    assert chain_description(wrapped) == "PersistentChains of Langevin 20 steps, size 0.2"
    assert longer_chain(object(), 200) is None
