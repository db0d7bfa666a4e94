"""End to end: a fit resumed from a checkpoint saved inside an epoch trains on the very batches
(images, order, flips) an uninterrupted fit trains on, and Lightning sees a resumable loader."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import Tensor

from lebm.data import ImageDataModule
from tests.helpers.trainers import quiet_trainer

EPOCHS, BATCHES_PER_EPOCH, BATCH_SIZE = 2, 5, 16
Record = tuple[int, int, Tensor, Tensor]  # (epoch, batch_idx, images (B, 1, 8, 8), labels (B,))


class BatchRecorder(L.LightningModule):
    """Trains one parameter and records every batch it trains on; optionally saves a checkpoint
    after batch ``stop_at[1]`` of epoch ``stop_at[0]`` and stops there."""

    def __init__(self, stop_at: tuple[int, int] | None = None, checkpoint: Path | None = None) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.stop_at, self.checkpoint = stop_at, checkpoint
        self.records: list[Record] = []

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        self.records.append((self.current_epoch, batch_idx, x.detach().clone(), y.detach().clone()))
        return self.weight * x.mean()

    def on_train_batch_end(self, outputs: object, batch: object, batch_idx: int) -> None:
        if (self.current_epoch, batch_idx) == self.stop_at:
            assert self.checkpoint is not None
            self.trainer.save_checkpoint(self.checkpoint)
            self.trainer.should_stop = True

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(module: BatchRecorder, num_workers: int, ckpt_path: Path | None = None) -> list[str]:
    """Fit ``module`` on flipped digits; returns the messages of the warnings raised."""
    trainer = quiet_trainer(max_epochs=EPOCHS, limit_train_batches=BATCHES_PER_EPOCH, limit_val_batches=0)
    data = ImageDataModule("digits", batch_size=BATCH_SIZE, random_flip=True, num_workers=num_workers)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return [str(warning.message) for warning in caught]


def same(records: list[Record], expected: list[Record]) -> bool:
    """Whether two lists of records name the same batches with equal images and labels."""
    return len(records) == len(expected) and all(
        (epoch, index) == (epoch_e, index_e) and torch.equal(x, x_e) and torch.equal(y, y_e)
        for (epoch, index, x, y), (epoch_e, index_e, x_e, y_e) in zip(records, expected, strict=True)
    )


@pytest.mark.parametrize(
    ("stop_at", "num_workers"),
    [((1, 1), 0), ((1, 1), 2), ((0, BATCHES_PER_EPOCH - 1), 2)],
    ids=["inside-epoch", "inside-epoch-workers", "last-batch-workers"],
)
def test_fit_resumed_from_a_checkpoint_trains_on_the_uninterrupted_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop_at: tuple[int, int], num_workers: int
) -> None:
    monkeypatch.setenv("PL_GLOBAL_SEED", "3")  # the run's seed (what seed_everything sets)
    straight = BatchRecorder()
    fit(straight, num_workers)
    assert len(straight.records) == EPOCHS * BATCHES_PER_EPOCH

    checkpoint = tmp_path / "interrupted.ckpt"
    interrupted = BatchRecorder(stop_at, checkpoint)
    fit(interrupted, num_workers)
    done = BATCHES_PER_EPOCH * stop_at[0] + stop_at[1] + 1
    assert same(interrupted.records, straight.records[:done])
    saved = torch.load(checkpoint, weights_only=False)["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert saved == [{"epoch": stop_at[0], "batches_done": stop_at[1] + 1}]  # the loader's state: what was trained

    resumed = BatchRecorder()
    messages = fit(resumed, num_workers, ckpt_path=checkpoint)
    assert same(resumed.records, straight.records[done:])  # the next batches: same images, order and flips
    assert not [message for message in messages if "not resumable" in message]


def test_flips_change_what_the_batches_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guard for the test above: the flips change the images it compares (with the same labels)."""
    monkeypatch.setenv("PL_GLOBAL_SEED", "3")
    flipped = ImageDataModule("digits", batch_size=BATCH_SIZE, random_flip=True)
    plain = ImageDataModule("digits", batch_size=BATCH_SIZE)
    x_flipped, y_flipped = next(iter(flipped.train_dataloader()))
    x_plain, y_plain = next(iter(plain.train_dataloader()))
    assert torch.equal(y_flipped, y_plain)
    mirrored = [not torch.equal(a, b) for a, b in zip(x_flipped, x_plain, strict=True)]
    assert 0 < sum(mirrored) < BATCH_SIZE
    assert all(torch.equal(a, b.flip(-1)) for a, b, m in zip(x_flipped, x_plain, mirrored, strict=True) if m)


def test_a_plain_dataloader_resumed_inside_an_epoch_keeps_lightnings_warning(tmp_path: Path) -> None:
    """CPU. A user's own ``DataLoader`` (not a lebm DataModule's) cannot resume inside an epoch: the
    resumed run trains on other batches than an uninterrupted one. Lightning says so, and lebm's
    command filters (``quiet_dependency_warnings``) keep that line."""
    from lebm.cli.main import quiet_dependency_warnings

    dataset = torch.utils.data.TensorDataset(torch.randn(80, 1, 8, 8), torch.zeros(80))
    plain = torch.utils.data.DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True)
    checkpoint = tmp_path / "interrupted.ckpt"
    trainer = quiet_trainer(max_epochs=EPOCHS, limit_train_batches=BATCHES_PER_EPOCH, limit_val_batches=0)
    trainer.fit(BatchRecorder((0, 1), checkpoint), plain)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_dependency_warnings()  # the filters every lebm command installs, after "always"
        resumed = quiet_trainer(max_epochs=EPOCHS, limit_train_batches=BATCHES_PER_EPOCH, limit_val_batches=0)
        resumed.fit(BatchRecorder(), plain, ckpt_path=checkpoint)
    assert [str(w.message) for w in caught if "dataloader is not resumable" in str(w.message)]
