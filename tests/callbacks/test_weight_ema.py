"""``lebm.callbacks.WeightEMA``: an exponential moving average of the parameters that validation
uses, that leaves training and the buffers alone, and that the checkpoint keeps. Each run is a
small 2-D model of ``tests/models/cases.py``. Device: CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from lebm.callbacks import WeightEMA
from tests.helpers.trainers import quiet_trainer
from tests.models.cases import latent_ebm, multistage_nce, toy_loader


def flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()]).clone()


class Watch(L.Callback):
    """The parameters after each training batch, and those validation ran with."""

    def __init__(self) -> None:
        self.after: list[torch.Tensor] = []
        self.validated: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer: L.Trainer, module: Any, *args: Any) -> None:
        self.after.append(flat(module))

    def on_validation_batch_start(self, trainer: L.Trainer, module: Any, *args: Any) -> None:
        self.validated.append(flat(module))


def fit(
    model: L.LightningModule, callbacks: list[Any], tmp_path: Path, ckpt_path: str | None = None, **settings: Any
) -> L.Trainer:
    settings.setdefault("max_epochs", 2)
    trainer = quiet_trainer(
        limit_val_batches=1,
        num_sanity_val_steps=0,
        inference_mode=False,
        default_root_dir=str(tmp_path),
        callbacks=callbacks,
        **settings,
    )
    trainer.fit(model, train_dataloaders=toy_loader(4), val_dataloaders=toy_loader(1), ckpt_path=ckpt_path)
    return trainer


def test_validation_uses_the_moving_average_and_training_is_unchanged(tmp_path: Path) -> None:
    """Validation after each epoch runs with ``theta_ema``, the moving average of the weights after
    each iteration (decay 0.75); training is bit for bit the run without the callback."""
    torch.manual_seed(0)
    plain = latent_ebm()
    fit(plain, [], tmp_path / "plain")

    torch.manual_seed(0)
    model, watch = latent_ebm(), Watch()
    start = flat(model)
    fit(model, [WeightEMA(decay=0.75), watch], tmp_path / "ema")
    assert torch.equal(flat(model), flat(plain)), "the average leaked into training"

    expected = start
    for after in watch.after[:4]:
        expected = 0.75 * expected + 0.25 * after
    assert torch.allclose(watch.validated[0], expected, atol=1e-6)
    assert not torch.allclose(watch.validated[0], watch.after[3])


def test_buffers_stay_the_models_own(tmp_path: Path) -> None:
    """A multi-stage prior's completed stages (buffers) are not averaged: validation and the model
    after training see the true count."""
    torch.manual_seed(0)
    model = multistage_nce()
    seen: list[int] = []

    class Stages(L.Callback):
        def on_validation_batch_start(self, trainer: L.Trainer, module: Any, *args: Any) -> None:
            seen.append(module.prior.completed_stages)

    fit(model, [WeightEMA(decay=0.9), Stages()], tmp_path, max_epochs=1)
    assert seen == [model.prior.completed_stages] and model.prior.completed_stages > 0


def test_the_checkpoint_keeps_the_average_and_load_average_applies_it(tmp_path: Path) -> None:
    """The averages are in the checkpoint: ``load_average`` puts the parameters validation used into
    a loaded model; a checkpoint without a WeightEMA says so."""
    torch.manual_seed(0)
    model, watch = latent_ebm(), Watch()
    trainer = fit(model, [WeightEMA(decay=0.5), watch], tmp_path, max_epochs=1)
    path = tmp_path / "ema.ckpt"
    trainer.save_checkpoint(path)
    loaded = WeightEMA.load_average(latent_ebm(), str(path))
    assert torch.allclose(flat(loaded), watch.validated[-1], atol=1e-6)

    bare = tmp_path / "bare.ckpt"
    plain_trainer = quiet_trainer(max_steps=1, inference_mode=False, limit_val_batches=0)
    plain_trainer.fit(latent_ebm(), train_dataloaders=toy_loader(1))
    plain_trainer.save_checkpoint(bare)
    with pytest.raises(ValueError, match="no WeightEMA averages"):
        WeightEMA.load_average(latent_ebm(), str(bare))


def test_resuming_a_checkpoint_continues_its_averages(tmp_path: Path) -> None:
    """A fit resumed from a checkpoint (``ckpt_path``) with a new WeightEMA takes the saved
    averages over: after the resumed epoch, validation runs with the saved average moved towards
    each new iteration's weights (decay 0.9), not with an average started afresh."""
    torch.manual_seed(0)
    first = fit(latent_ebm(), [WeightEMA(decay=0.9)], tmp_path / "first", max_epochs=1)
    path = tmp_path / "first.ckpt"
    first.save_checkpoint(path)
    saved = flat_average(torch.load(path, map_location="cpu", weights_only=True))

    torch.manual_seed(0)
    model, watch = latent_ebm(), Watch()
    fit(model, [WeightEMA(decay=0.9), watch], tmp_path / "resumed", max_epochs=2, ckpt_path=str(path))
    assert len(watch.after) == 4 and len(watch.validated) == 1
    expected = saved
    for after in watch.after:
        expected = 0.9 * expected + 0.1 * after
    assert torch.allclose(watch.validated[0], expected, atol=1e-6), "the saved averages were not restored"


def flat_average(checkpoint: dict[str, Any]) -> torch.Tensor:
    """The averages a checkpoint's WeightEMA state holds, flattened in the parameters' order."""
    (state,) = [state for key, state in checkpoint["callbacks"].items() if key.startswith("WeightEMA")]
    names = [name for name, _ in latent_ebm().named_parameters()]
    return torch.cat([state["average"][name].flatten() for name in names])


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="decay must be in"):
        WeightEMA(decay=1.0)
    with pytest.raises(ValueError, match="start_step must be"):
        WeightEMA(start_step=-1)
