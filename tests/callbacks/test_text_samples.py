"""TextSamples: each validation sentence followed by its own reconstruction in
``samples/reconstructions_epoch*.txt``, the generated sentences in ``samples/generated_epoch*.txt``,
and a ``samples`` folder that cannot be written warns once while training goes on. A stand-in
method whose sentences are known (its reconstruction reverses the words) on a real Trainer.
Device: CPU."""

from __future__ import annotations

import errno
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import lebm.callbacks.text_samples as text_samples
from lebm.callbacks import TextSamples
from lebm.samplers import Langevin
from tests.helpers.trainers import quiet_trainer


class Talker(L.LightningModule):
    """A method that speaks: ``generate(n)`` numbers its sentences, ``reconstruct`` reverses the words."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.generation_sampler = Langevin(7, 0.4)
        self.posterior_sampler = Langevin(3, 0.1)
        self.epochs_trained = 0

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.layer(batch[0]).square().mean()

    def on_train_epoch_end(self) -> None:
        self.epochs_trained += 1

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def generate(self, n: int) -> list[str]:
        return [f"sentence number {i}" for i in range(n)]

    def reconstruct(self, sentences: list[str]) -> list[str]:
        return [" ".join(reversed(sentence.split())) for sentence in sentences]


class Sentences(L.LightningDataModule):
    """Two training batches and three validation sentences (as word lists, as TextDataModule keeps them)."""

    val_sentences = [["the", "cat", "sat"], ["a", "dog", "ran", "off"], ["birds", "sing"]]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.ones(4, 1)), batch_size=2)


def fit(run: Path, epochs: int = 1) -> Talker:
    model = Talker()
    trainer = quiet_trainer(
        accelerator="cpu", default_root_dir=str(run), max_epochs=epochs, callbacks=[TextSamples(n=2, every_n_epochs=1)]
    )
    trainer.fit(model, datamodule=Sentences())
    return model


def test_each_validation_sentence_is_followed_by_its_own_reconstruction(tmp_path: Path) -> None:
    fit(tmp_path)
    header, *lines = (tmp_path / "samples" / "reconstructions_epoch0000.txt").read_text().splitlines()
    assert lines == ["the cat sat", "> sat cat the", "a dog ran off", "> off ran dog a"]
    assert header == (
        "# epoch 0: validation sentences, each followed by its reconstruction (posterior chain: Langevin 3 steps, "
        "size 0.1)"
    )
    generated = (tmp_path / "samples" / "generated_epoch0000.txt").read_text().splitlines()
    assert generated == [
        "# epoch 0: 2 sentences of generate(n); prior chain: Langevin 7 steps, size 0.4",
        "sentence number 0",
        "sentence number 1",
    ]


def test_a_file_where_the_samples_folder_belongs_warns_once_and_training_goes_on(
    tmp_path: Path,
) -> None:
    (tmp_path / "samples").write_text("a file where the folder should be")
    with pytest.warns(UserWarning) as caught:
        model = fit(tmp_path, epochs=2)
    said = [str(warning.message) for warning in caught if "TextSamples" in str(warning.message)]
    assert said == [
        f"TextSamples cannot write the sentence files into {tmp_path / 'samples'}: a file of that name is in the "
        f"way; training goes on without them. To keep them, move the file {tmp_path / 'samples'} away (the next "
        "epoch that writes tries again)"
    ]
    assert model.epochs_trained == 2 and model.trainer.global_step == 4


def test_a_write_that_fails_at_an_epoch_warns_once_and_training_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(path: str, lines: list[str]) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(text_samples, "write_text_atomically", full_disk)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = fit(tmp_path, epochs=2)
    said = [str(warning.message) for warning in caught if "TextSamples" in str(warning.message)]
    assert len(said) == 1 and ": no space left on device; training goes on without them" in said[0]
    assert model.epochs_trained == 2
