"""ValidateLastEpoch (every method's own callback): a fit that ``max_steps`` ends inside an epoch
validates its final model, for every method, through Lightning's path for a granted stop
(``max_time``'s too), once, in an epoch
that ``check_val_every_n_epoch`` skips as well, without changing what is trained; a fit that ends
with its final model unvalidated (SIGTERM, a stop ``min_epochs`` refuses) says so in one line with
the way to score it. Device: CPU."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import TensorDataset

from lebm.data.loaders import evaluation_loader
from lebm.training.final_validation import ValidateLastEpoch
from tests.helpers.cli_runner import SigtermAt
from tests.helpers.trainers import quiet_trainer
from tests.models.cases import CASES, MethodCase, latent_ebm, toy_loader

ids = [case.name for case in CASES]
#: DAMC's toy run (an ancestral start per chain) takes several seconds: in the slow tier, which CI runs too.
FAST_CASES = [case if case.name != "DAMC" else pytest.param(case, marks=pytest.mark.slow) for case in CASES]


class ValidatedSteps(L.Callback):
    """The global steps at which the fit validated (the sanity check left out)."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.steps.append(trainer.global_step)


def fit(model: L.LightningModule, tmp_path: Path, *callbacks: L.Callback, **settings: Any) -> L.Trainer:
    """``model`` fitted on 4 toy batches an epoch, validated on 1, with ``callbacks``."""
    defaults: dict[str, Any] = {
        "max_epochs": 5,
        "check_val_every_n_epoch": 1,
        "default_root_dir": str(tmp_path),
        "accelerator": "cpu",
        "inference_mode": False,
        "num_sanity_val_steps": 0,
    }
    trainer = quiet_trainer(**{**defaults, **settings}, callbacks=list(callbacks))
    trainer.fit(model, toy_loader(n_batches=4), toy_loader(n_batches=1))
    return trainer


@pytest.mark.parametrize("case", FAST_CASES, ids=ids)
def test_a_fit_that_max_steps_ends_inside_an_epoch_validates_its_final_model(case: MethodCase, tmp_path: Path) -> None:
    seen = ValidatedSteps()
    trainer = fit(case.build(), tmp_path, seen, max_steps=3)
    assert trainer.global_step == 3 and seen.steps == [3]
    assert "val/nll" in trainer.callback_metrics


@pytest.mark.parametrize(
    ("settings", "validated"),
    [
        ({"max_steps": 4}, [4]),  # the epoch's last batch validates anyway: once
        ({"max_steps": 6, "check_val_every_n_epoch": 10}, [6]),  # an epoch the setting skips: its last step
    ],
    ids=["epoch-end", "skipped-epoch"],
)
def test_the_final_step_validates_once_and_the_setting_is_given_back(
    tmp_path: Path, settings: dict[str, Any], validated: list[int]
) -> None:
    seen = ValidatedSteps()
    trainer = fit(latent_ebm(), tmp_path, seen, **settings)
    assert seen.steps == validated
    assert trainer.check_val_every_n_epoch == settings.get("check_val_every_n_epoch", 1)


class PlainModule(L.LightningModule):
    """A LightningModule of one's own: no lebm method, so no ``ValidateLastEpoch`` of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(2, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.net(batch[0]).pow(2).mean()

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.log("val/loss", self.net(batch[0]).pow(2).mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_any_lightning_module_validates_its_final_step_in_an_epoch_the_setting_skips(tmp_path: Path) -> None:
    seen = ValidatedSteps()
    trainer = fit(PlainModule(), tmp_path, ValidateLastEpoch(), seen, max_steps=6, check_val_every_n_epoch=10)
    assert seen.steps == [6] and trainer.check_val_every_n_epoch == 10


def test_a_last_epoch_that_also_validates_mid_epoch_validates_at_its_end(tmp_path: Path) -> None:
    """CPU. ``val_check_interval 0.5`` under ``check_val_every_n_epoch 10``: the last epoch validates at
    its middle and at its end (the setting given back at the middle skipped the end, the final model's)."""
    seen = ValidatedSteps()
    trainer = fit(PlainModule(), tmp_path, ValidateLastEpoch(), seen, max_epochs=2, check_val_every_n_epoch=10,
                  val_check_interval=0.5)  # fmt: skip
    assert seen.steps == [6, 8] and trainer.check_val_every_n_epoch == 10


class StopAskedThenWithdrawn(L.Callback):
    """Asks the fit to stop at the end of its first epoch and withdraws the request once that epoch's
    validation has read the model (a rule of one's own that lets the fit go on after all)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.current_epoch == 0 and batch_idx == 3:
            trainer.should_stop = True

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.should_stop = False


def test_a_fit_that_goes_on_after_a_granted_stop_validates_as_its_setting_says_again(tmp_path: Path) -> None:
    """CPU. A stop request at the end of epoch 1 of 4 (``check_val_every_n_epoch 10``) makes that epoch
    validate; the request withdrawn, the fit goes on: epochs 2 and 3 do not validate, the last one
    does (its final model)."""
    seen = ValidatedSteps()
    trainer = fit(PlainModule(), tmp_path, StopAskedThenWithdrawn(), ValidateLastEpoch(), seen, max_epochs=4,
                  check_val_every_n_epoch=10)  # fmt: skip
    assert trainer.global_step == 16 and seen.steps == [4, 16] and trainer.check_val_every_n_epoch == 10


def test_a_fit_resumed_inside_its_last_epoch_validates_its_final_model(tmp_path: Path) -> None:
    """CPU. A method (its own ``ValidateLastEpoch``) cut by ``max_steps`` inside the last epoch (step 6
    of 8, validated there), then resumed from its checkpoint under ``check_val_every_n_epoch 10``: the
    resumed fit starts no epoch, yet its final model (step 8) is validated."""
    saver = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)
    fit(latent_ebm(), tmp_path, saver, max_epochs=2, max_steps=6, check_val_every_n_epoch=10,
        enable_checkpointing=True)  # fmt: skip
    path = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(path, weights_only=False)["global_step"] == 6
    seen = ValidatedSteps()
    trainer = quiet_trainer(
        max_epochs=2, check_val_every_n_epoch=10, default_root_dir=str(tmp_path), accelerator="cpu",
        num_sanity_val_steps=0, callbacks=[seen],
    )  # fmt: skip
    trainer.fit(latent_ebm(), toy_loader(n_batches=4), toy_loader(n_batches=1), ckpt_path=str(path))
    assert trainer.global_step == 8 and seen.steps == [8]


class SlowFirstBatch(L.Callback):
    """The first training batch takes over a second (the time budget below runs out inside the epoch)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_step == 1:
            time.sleep(1.1)


def test_a_fit_that_max_time_ends_inside_an_epoch_validates_its_final_model(tmp_path: Path) -> None:
    seen = ValidatedSteps()
    trainer = fit(latent_ebm(), tmp_path, SlowFirstBatch(), seen, max_time={"seconds": 1})
    assert trainer.global_step < 4 and seen.steps == [trainer.global_step]  # the timer's stop, then validation


def test_without_validation_nothing_is_asked(tmp_path: Path) -> None:
    seen = ValidatedSteps()
    trainer = fit(latent_ebm(), tmp_path, seen, max_steps=3, limit_val_batches=0)
    assert seen.steps == [] and not trainer.should_stop


def checkpoint_after(tmp_path: Path, *callbacks: L.Callback, limit_val_batches: int = 1) -> dict[str, Any]:
    """A 3-step fit (inside the first epoch) of LatentEBM validated on an evaluation loader
    (``limit_val_batches=0``: not validated), and the checkpoint saved after it."""
    torch.manual_seed(0)
    trainer = quiet_trainer(
        max_steps=3,
        max_epochs=5,
        default_root_dir=str(tmp_path),
        accelerator="cpu",
        inference_mode=False,
        num_sanity_val_steps=0,
        limit_val_batches=limit_val_batches,
        callbacks=list(callbacks),
    )
    validation = evaluation_loader(TensorDataset(toy_loader(n_batches=1, seed=1).dataset.tensors[0]), batch_size=16)
    trainer.fit(latent_ebm(), toy_loader(n_batches=4), validation)
    trainer.save_checkpoint(tmp_path / "after.ckpt")
    return torch.load(tmp_path / "after.ckpt", map_location="cpu", weights_only=True)


def test_the_final_validation_changes_nothing_that_is_trained(tmp_path: Path) -> None:
    """The weights, optimisers and random streams (training stream, torch's global RNG) of the
    checkpoint equal those of the same fit without the final validation, bitwise."""
    validated, plain = ValidatedSteps(), ValidatedSteps()
    with_it = checkpoint_after(tmp_path / "validated", validated)
    without = checkpoint_after(tmp_path / "plain", plain, limit_val_batches=0)
    assert validated.steps == [3] and plain.steps == []
    for key, value in without["state_dict"].items():
        assert torch.equal(value, with_it["state_dict"][key]), key
    assert repr(without["optimizer_states"]) == repr(with_it["optimizer_states"])
    (streams,) = without["lebm_random_streams"]["ranks"]
    for name, state in streams.items():
        assert torch.equal(state, with_it["lebm_random_streams"]["ranks"][0][name]), name


def test_a_stop_that_min_epochs_refuses_says_the_final_model_was_not_validated(tmp_path: Path) -> None:
    seen = ValidatedSteps()
    saved = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)
    with pytest.warns(UserWarning, match=r"the final model \(step 3\) was not validated") as said:
        fit(
            latent_ebm(),
            tmp_path,
            seen,
            saved,
            max_steps=3,
            min_epochs=2,
            enable_checkpointing=True,
        )
    assert seen.steps == []
    (line,) = [str(w.message) for w in said if "final model" in str(w.message)]
    assert "trainer.validate(model, datamodule=..., ckpt_path=" in line and "last.ckpt" in line


def test_a_fit_stopped_by_sigterm_is_not_validated_and_says_how_to_score_it(tmp_path: Path) -> None:
    """A signal asks the run to stop now: its checkpoint first, no validation; the line gives the
    ``lebm validate`` command of a run folder with its ``config.yaml``."""
    (tmp_path / "config.yaml").write_text("seed_everything: 1\n")
    seen = ValidatedSteps()
    saved = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)
    with (
        pytest.warns(UserWarning, match=r"step 2\) was not validated \(stopped by SIGTERM\)") as said,
        pytest.raises(SIGTERMException),
    ):
        fit(
            latent_ebm(),
            tmp_path,
            SigtermAt(epoch=0, batch=1),
            seen,
            saved,
            enable_checkpointing=True,
        )
    assert seen.steps == []
    (line,) = [str(w.message) for w in said if "final model" in str(w.message)]
    config, checkpoint = tmp_path / "config.yaml", tmp_path / "checkpoints" / "last.ckpt"
    assert line.endswith(f"score its last checkpoint with: lebm validate -c {config} --ckpt_path {checkpoint}")


@pytest.mark.parametrize(
    ("stop", "settings", "validated"),
    [
        (SigtermAt(epoch=1, batch=1), {}, [4]),  # an earlier validation (epoch 0's) does not silence the line
        (SigtermAt(epoch=0, batch=2), {"max_steps": 3}, []),  # the signal on the max_steps step: no validation
    ],
    ids=["after-an-earlier-validation", "on-the-max-steps-step"],
)
def test_a_sigterm_is_never_validated_and_always_said(
    tmp_path: Path, stop: L.Callback, settings: dict[str, Any], validated: list[int]
) -> None:
    """CPU. SIGTERM in epoch 1 after epoch 0 validated (step 4): the final model (step 6) is not
    validated and the line says so; SIGTERM on the step that reaches ``max_steps``: the signal wins
    over the final validation, and the line says so too."""
    seen = ValidatedSteps()
    with pytest.warns(UserWarning, match=r"was not validated \(stopped by SIGTERM\)"), pytest.raises(SIGTERMException):
        fit(latent_ebm(), tmp_path, stop, seen, **settings)
    assert seen.steps == validated


def test_an_epoch_cut_by_max_steps_is_saved_open_and_other_saves_are_unchanged() -> None:
    """CPU. Lightning counts an epoch that max_steps ended inside as processed; lebm's save leaves it
    open (processed one below started, as a signal's save inside an epoch), so a resume trains its
    remaining batches. End-of-epoch saves and saves already open are untouched."""
    import copy

    from lebm.training.resume import epochs_held, keep_a_cut_epoch_open

    def saved(processed: int, is_last_batch: bool, done: int) -> dict:
        counts = {"ready": 2, "completed": 1, "started": 2, "processed": processed}
        batches = {"current": {"ready": done, "completed": done, "started": done, "processed": done}}
        epoch_loop = {**batches, "is_last_batch": is_last_batch}
        fit = {
            "epoch_progress": {"total": dict(counts), "current": dict(counts)},
            "epoch_loop.batch_progress": epoch_loop,
        }
        return {"loops": {"fit_loop": fit}, "global_step": 14}

    cut = saved(processed=2, is_last_batch=False, done=6)
    keep_a_cut_epoch_open(cut)
    assert cut["loops"]["fit_loop"]["epoch_progress"]["total"]["processed"] == 1 and epochs_held(cut) == (1, True)
    for unchanged in (saved(2, True, 8), saved(1, False, 6)):  # an epoch's end; a signal's save inside it
        before = copy.deepcopy(unchanged)
        keep_a_cut_epoch_open(unchanged)
        assert unchanged == before


def test_an_epoch_cut_by_max_steps_does_not_decay_the_rate_and_its_resume_decays_it_once(tmp_path: Path) -> None:
    """CPU. The per-epoch decay steps when an epoch ends, not when ``max_steps`` cuts one (the cut
    epoch stays open): a fit cut after 2 of 4 batches keeps the first rate; resumed to the epoch's
    end, the rate has decayed once, as in the fit that never stopped."""

    def rate(model: Any) -> float:
        return model.trainer.optimizers[0].param_groups[0]["lr"]

    def trainer(**settings: object) -> L.Trainer:
        keep = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0)
        return quiet_trainer(accelerator="cpu", limit_val_batches=0, callbacks=[keep], **settings)

    cut = latent_ebm()
    cut.hparams.lr_decay = 0.5
    trainer(max_steps=2, max_epochs=1, enable_checkpointing=True).fit(cut, toy_loader(n_batches=4))
    assert rate(cut) == pytest.approx(1e-3)  # the cut epoch is open: no decay yet
    resumed = latent_ebm()
    resumed.hparams.lr_decay = 0.5
    run = trainer(max_epochs=1, enable_checkpointing=True)
    run.fit(resumed, toy_loader(n_batches=4), ckpt_path=str(tmp_path / "last.ckpt"))
    assert run.global_step == 4 and rate(resumed) == pytest.approx(0.5e-3)  # decayed once, at the epoch's end
