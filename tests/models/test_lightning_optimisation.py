"""Lightning's optimisation settings on every method (``lebm.training.stepping``): one meaning of
"step", ``accumulate_grad_batches``, gradient clipping, and the callbacks that cannot apply
refused in one line. Each method is its small 2-D model of ``cases.py``, fitted by a Trainer built
in Python (the CLI passes the same Trainer arguments: ``tests/cli/test_lightning_flags.py``).
Device: CPU."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import pytest
import torch
from cases import CASES, LATENT, MethodCase, Recording, latent_ebm, recorders, toy_decoder, toy_loader
from lightning.pytorch.callbacks import (
    BatchSizeFinder,
    EMAWeightAveraging,
    GradientAccumulationScheduler,
    ModelCheckpoint,
    StochasticWeightAveraging,
)
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.tuner import Tuner

from lebm.models import LatentEBM, TiltedGaussianPrior
from lebm.models.base import batch_observations
from lebm.nets import EnergyMLP
from lebm.samplers import Langevin
from tests.helpers.trainers import quiet_trainer

IDS = [case.name for case in CASES]


class BatchRecord(L.Callback):
    """Per training batch: the parameters after it; per optimiser step, the gradients it steps with
    (read right after the model's ``on_before_optimizer_step``, which clips them inside the step)."""

    def __init__(self) -> None:
        self.parameters_after: list[torch.Tensor] = []
        self.steps: list[dict[str, Any]] = []

    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        clip = module.on_before_optimizer_step

        def clip_then_record(optimizer: Any) -> None:
            clip(optimizer)
            self.record_step(optimizer)

        module.on_before_optimizer_step = clip_then_record

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        self.parameters_after.append(torch.cat([p.detach().flatten() for p in module.parameters()]).clone())

    def record_step(self, optimizer: Any) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        self.steps.append(
            {
                "norm": torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item(),
                "max": max(g.abs().max().item() for g in grads),
                "parameters": {id(p) for group in optimizer.param_groups for p in group["params"]},
            }
        )


def fit(model: L.LightningModule, batches: int = 4, **settings: Any) -> tuple[L.Trainer, BatchRecord]:
    record = BatchRecord()
    callbacks = [record, *settings.pop("callbacks", [])]
    settings.setdefault("max_epochs", 1)
    trainer = quiet_trainer(limit_val_batches=0, inference_mode=False, callbacks=callbacks, **settings)
    trainer.fit(model, train_dataloaders=toy_loader(batches))
    return trainer, record


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_max_steps_counts_training_iterations_on_every_method(case: MethodCase) -> None:
    """``max_steps=3`` trains 3 batches whatever the number of nets (LatentEBM steps 2 optimisers
    per batch, DualMCMC 3), and ``global_step`` is 3."""
    torch.manual_seed(0)
    trainer, record = fit(case.build(), max_steps=3, max_epochs=5)
    assert len(record.parameters_after) == 3
    assert trainer.global_step == 3


def test_checkpoint_names_and_the_loggers_axis_count_iterations(tmp_path: Any) -> None:
    """After 3 iterations of a 2-net method the checkpoint is ``step=3`` and the logger's rows are
    at steps 0, 1, 2 (one per iteration)."""
    from lightning.pytorch.loggers import CSVLogger

    torch.manual_seed(0)
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{step}", every_n_train_steps=3, save_top_k=-1)
    logger = CSVLogger(tmp_path, name="csv", version=0)
    fit(
        latent_ebm(),
        max_steps=3,
        enable_checkpointing=True,
        callbacks=[checkpoints],
        logger=logger,
        log_every_n_steps=1,
    )
    assert sorted(path.name for path in (tmp_path / "ckpt").iterdir()) == ["step=3.ckpt"]
    rows = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    column = rows[0].split(",").index("step")
    assert sorted({int(row.split(",")[column]) for row in rows[1:]}) == [0, 1, 2]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_accumulation_updates_every_n_batches(case: MethodCase) -> None:
    """``accumulate_grad_batches=2`` over 4 batches: every net changes after batches 2 and 4 only,
    every micro-batch runs its chains (one draw per batch), and 2 iterations are counted."""
    torch.manual_seed(0)
    model = case.build()
    start = torch.cat([p.detach().flatten() for p in model.parameters()]).clone()
    trainer, record = fit(model, accumulate_grad_batches=2)
    after = record.parameters_after
    assert len(after) == 4
    assert torch.equal(after[0], start), "an update after the window's first batch"
    assert not torch.equal(after[1], after[0]), "no update at the end of the window"
    assert torch.equal(after[2], after[1])
    assert not torch.equal(after[3], after[2])
    assert trainer.global_step == 2
    assert len(recorders(model)[case.data_free_chain].calls) == 4
    assert trainer.accumulate_grad_batches == 2, "the Trainer's own setting is kept for its loops"


def test_accumulated_gradient_is_the_mean_over_the_window() -> None:
    """Over identical micro-batches whose data dominate the decoder's output-bias gradient, each
    window's accumulated gradient equals one batch's (the mean over the window, zeroed when the
    next window opens), not a multiple of it."""

    def output_bias_gradients(accumulate: int) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = latent_ebm()
        seen: list[torch.Tensor] = []

        class Grab(L.Callback):
            def on_before_optimizer_step(self, trainer: L.Trainer, module: Any, optimizer: Any) -> None:
                bias = list(module.decoder.parameters())[-1]
                if any(p is bias for group in optimizer.param_groups for p in group["params"]):
                    seen.append(bias.grad.clone())

        data = torch.full((32, 2), 20.0)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data), batch_size=8)
        trainer = quiet_trainer(
            max_epochs=1, limit_val_batches=0, inference_mode=False, accumulate_grad_batches=accumulate
        )
        trainer.callbacks.append(Grab())
        trainer.fit(model, train_dataloaders=loader)
        return seen

    single, accumulated = output_bias_gradients(1), output_bias_gradients(2)
    assert len(single) == 4 and len(accumulated) == 2
    for window in accumulated:
        assert torch.allclose(window, single[0], rtol=0.05)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradient_clip_val_bounds_every_nets_gradient_norm(case: MethodCase) -> None:
    """``gradient_clip_val`` clips each net's gradients separately: every optimiser step sees a
    norm at most the value (each net's own norm, not the nets' joint norm)."""
    torch.manual_seed(0)
    _, record = fit(case.build(), batches=2, gradient_clip_val=1e-3)
    assert record.steps
    assert all(step["norm"] <= 1e-3 * (1 + 1e-4) for step in record.steps)
    assert any(step["norm"] > 0.9e-3 for step in record.steps)


def test_gradient_clip_by_value_and_a_nets_own_setting_wins() -> None:
    """``gradient_clip_algorithm="value"`` bounds every element; LatentEBM's ``decoder_grad_clip``
    overrides the Trainer's value for the decoder (max-norm), the prior keeps the Trainer's."""
    torch.manual_seed(0)
    _, record = fit(latent_ebm(), batches=2, gradient_clip_val=1e-4, gradient_clip_algorithm="value")
    assert all(step["max"] <= 1e-4 * (1 + 1e-6) for step in record.steps)

    torch.manual_seed(0)
    model = latent_ebm()
    model.hparams.decoder_grad_clip = 1e-2
    decoder = {id(p) for p in model.decoder.parameters()}
    _, record = fit(model, batches=2, gradient_clip_val=1e-4)
    decoder_steps = [step for step in record.steps if step["parameters"] == decoder]
    prior_steps = [step for step in record.steps if step["parameters"] != decoder]
    assert decoder_steps and prior_steps
    assert all(1e-4 < step["norm"] <= 1e-2 * (1 + 1e-4) for step in decoder_steps)
    assert all(step["norm"] <= 1e-4 * (1 + 1e-4) for step in prior_steps)


def test_a_nets_own_clip_is_a_max_norm_when_the_trainer_clips_by_value() -> None:
    """With ``gradient_clip_algorithm="value"`` in the Trainer, LatentEBM's ``decoder_grad_clip``
    still clips the decoder's gradients by their norm (at most the setting, and reaching it), not
    elementwise; the prior keeps the Trainer's elementwise bound."""
    torch.manual_seed(0)
    model = latent_ebm()
    model.hparams.decoder_grad_clip = 1e-2
    decoder = {id(p) for p in model.decoder.parameters()}
    _, record = fit(model, batches=2, gradient_clip_val=1e-4, gradient_clip_algorithm="value")
    decoder_steps = [step for step in record.steps if step["parameters"] == decoder]
    prior_steps = [step for step in record.steps if step["parameters"] != decoder]
    assert decoder_steps and prior_steps
    assert all(step["norm"] <= 1e-2 * (1 + 1e-4) for step in decoder_steps), "the decoder was clipped by value"
    assert any(step["norm"] > 0.9e-2 for step in decoder_steps)
    assert all(step["max"] <= 1e-4 * (1 + 1e-6) for step in prior_steps)


class ScaledLosses(MixedPrecision):
    """A stand-in for ``precision="16-mixed"`` on the CPU: Lightning's mixed-precision plugin with a
    gradient scaler whose scale is 1024 (the loss is scaled before every backward pass and the
    gradients unscaled inside the step), without autocast, so the nets run in float32."""

    SCALE = 1024.0

    def __init__(self) -> None:
        scaler = torch.amp.GradScaler("cpu", init_scale=self.SCALE, growth_interval=1_000_000)
        super().__init__("16-mixed", "cpu", scaler=scaler)

    @contextmanager
    def forward_context(self) -> Iterator[None]:
        yield


@pytest.mark.parametrize("own_clip", [False, True], ids=["trainer-clip", "own-clip"])
def test_clipping_comes_after_mixed_precision_unscales_the_gradients(own_clip: bool) -> None:
    """Under a gradient scaler whose scale is not 1, every net's gradients are clipped once they
    are unscaled: each step sees a norm at most the clip value and reaching it (clipped while
    scaled, the norm would be the value / 1024), whether the Trainer's ``gradient_clip_val`` or a
    net's own setting clips."""
    torch.manual_seed(0)
    model = latent_ebm()
    clip = 1e-3
    if own_clip:
        model.hparams.decoder_grad_clip = clip
        model.hparams.prior_grad_clip = clip
    plugin = ScaledLosses()
    settings: dict[str, Any] = {} if own_clip else {"gradient_clip_val": clip}
    _, record = fit(model, batches=2, plugins=[plugin], **settings)
    assert plugin.scaler.get_scale() == ScaledLosses.SCALE, "the stand-in did not scale (or skipped a step)"
    assert len(record.steps) == 4
    assert all(step["norm"] <= clip * (1 + 1e-4) for step in record.steps)
    assert all(step["norm"] > 0.9 * clip for step in record.steps), "clipped before the scaler unscaled"


class SharedGraph(LatentEBM):
    """A method whose decoder loss also runs through the prior's energy net (a graph shared by two
    nets, as a user's method may have), and whose prior loss has a zero gradient: the prior's
    gradient at its step must hold its own loss alone, zero."""

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x = batch_observations(batch)
        decoder_optimizer, prior_optimizer = self.optimizer_list()
        z = torch.randn(x.shape[0], LATENT, generator=self.train_generator)
        decoder_loss = self.decoder.nll(x, z).mean() + self.prior.energy(z).mean()
        self.step_optimizers(decoder_optimizer, decoder_loss)
        self.step_optimizers(prior_optimizer, 0.0 * self.prior.energy(z).mean())


def test_each_accumulated_loss_reaches_only_the_nets_it_updates() -> None:
    """``accumulate_grad_batches=2`` over a method whose decoder loss reaches the prior's
    parameters too: the prior's accumulated gradient at its step is its own loss's (zero), with no
    part of the decoder loss of the window's later batch in it; the decoder steps on a gradient."""
    torch.manual_seed(0)
    prior = TiltedGaussianPrior(LATENT, EnergyMLP(LATENT, hidden=16), sampler=Recording(Langevin(5, 0.4)))
    model = SharedGraph(toy_decoder(), prior, posterior_sampler=Langevin(5, 0.1), decoder_lr=1e-3, prior_lr=1e-3)
    prior_parameters = {id(p) for p in model.prior.parameters()}
    _, record = fit(model, batches=4, accumulate_grad_batches=2)
    prior_steps = [step for step in record.steps if step["parameters"] == prior_parameters]
    decoder_steps = [step for step in record.steps if step["parameters"] != prior_parameters]
    assert len(prior_steps) == len(decoder_steps) == 2
    assert all(step["norm"] == 0.0 for step in prior_steps), "the decoder loss reached the prior's gradient"
    assert all(step["norm"] > 0.0 for step in decoder_steps)


def test_a_trainer_keeps_its_settings_for_a_second_fit() -> None:
    """The Trainer's clipping and accumulation are taken over for a run and given back after it:
    a second ``fit`` with the same Trainer applies them again."""
    torch.manual_seed(0)
    trainer = quiet_trainer(
        max_epochs=1, limit_val_batches=0, inference_mode=False, accumulate_grad_batches=2, gradient_clip_val=0.5
    )
    model = latent_ebm()
    trainer.fit(model, train_dataloaders=toy_loader(2))
    assert (trainer.accumulate_grad_batches, trainer.gradient_clip_val) == (2, 0.5)
    trainer.fit_loop.max_epochs = 2
    trainer.fit(model, train_dataloaders=toy_loader(2))
    assert model.step_settings.accumulate == 2 and model.step_settings.clip_val == 0.5


def test_a_failed_run_gives_the_trainer_its_settings_back() -> None:
    """A run that raises (here from a callback) still gives the Trainer back its accumulation and
    clipping (Lightning skips ``teardown`` then)."""

    class Fail(L.Callback):
        def on_train_batch_end(self, *args: Any) -> None:
            raise RuntimeError("stop here")

    trainer = quiet_trainer(
        max_epochs=1,
        limit_val_batches=0,
        inference_mode=False,
        accumulate_grad_batches=2,
        gradient_clip_val=0.5,
        callbacks=[Fail()],
    )
    with pytest.raises(RuntimeError, match="stop here"):
        trainer.fit(latent_ebm(), train_dataloaders=toy_loader(2))
    assert (trainer.accumulate_grad_batches, trainer.gradient_clip_val) == (2, 0.5)


@pytest.mark.parametrize(
    ("callback", "named"),
    [
        (lambda: StochasticWeightAveraging(swa_lrs=1e-2), "lebm.callbacks.WeightEMA"),
        (lambda: EMAWeightAveraging(), "lebm.callbacks.WeightEMA"),
        (lambda: BatchSizeFinder(), "data.init_args.batch_size"),
        (lambda: GradientAccumulationScheduler({0: 2, 1: 4}), "accumulate_grad_batches=N"),
    ],
    ids=["SWA", "EMAWeightAveraging", "BatchSizeFinder", "GradientAccumulationScheduler"],
)
def test_callbacks_that_cannot_apply_are_refused_in_one_line(callback: Any, named: str) -> None:
    """SWA, Lightning's weight averaging, BatchSizeFinder and GradientAccumulationScheduler stop
    before training with one line naming lebm's way."""
    model = latent_ebm()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=named) as raised:
        fit(model, callbacks=[callback()])
    assert "\n" not in str(raised.value)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)), "trained before refusing"


def test_lr_find_is_refused_naming_the_per_net_learning_rates() -> None:
    """``Tuner.lr_find`` stops with one line naming the per-net learning-rate options."""
    trainer = quiet_trainer(max_steps=2, inference_mode=False)
    with pytest.raises(ValueError, match=r"model\.init_args\.\*_lr"):
        Tuner(trainer).lr_find(latent_ebm(), train_dataloaders=toy_loader(2))


def test_schedules_in_iterations_count_updates_under_accumulation() -> None:
    """Multi-stage NCE's stages (one iteration each here) and the hierarchical EBM's KL warm-up
    count updates: 4 batches accumulated by 2 complete 2 stages and count 2 warm-up iterations."""
    from cases import joint_hierarchical_ebm, multistage_nce

    torch.manual_seed(0)
    model = multistage_nce()
    fit(model, accumulate_grad_batches=2)
    assert model.prior.completed_stages == 2
    model = joint_hierarchical_ebm()
    model.hparams.kl_warmup_steps = 4.0
    fit(model, accumulate_grad_batches=2)
    assert int(model.kl_warmup_iterations) == 2


def test_fit_of_a_compiled_model_runs_the_steps_eagerly_with_one_warning() -> None:
    """``trainer.fit(torch.compile(model))`` would compile the whole training step, every chain
    included: the steps run eagerly instead, with one warning naming lebm's compiled nets."""
    torch.manual_seed(0)
    model = latent_ebm()
    with pytest.warns(UserWarning, match="FastNets") as warned:
        trainer, record = fit(torch.compile(model), batches=2)
    assert sum("torch.compile(model)" in str(w.message) for w in warned) == 1
    assert trainer.global_step == 2 and len(record.parameters_after) == 2
