"""MultiStageNCE and its product-of-ratios prior: stage bookkeeping, the options of the
reconstruction, checkpoints and resume, and the user API."""

from __future__ import annotations

import os
from typing import Any

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lebm.models import MultiStageNCE, ProductOfRatiosPrior
from lebm.nets import EnergyMLP, GaussianDecoder, MLPGenerator
from lebm.samplers import Langevin, PersistentChains
from tests.helpers.ddp import forked_ranks
from tests.helpers.trainers import quiet_trainer

LATENT, DATA = 3, 2


def small_model(n_stages: int = 3, **kwargs: Any) -> MultiStageNCE:
    decoder = GaussianDecoder(MLPGenerator(LATENT, [DATA], hidden=16, out_activation=None), sigma=0.3)
    prior = ProductOfRatiosPrior(LATENT, EnergyMLP(LATENT, hidden=16), n_stages=n_stages, sampler=Langevin(5, 0.4))
    defaults: dict[str, Any] = dict(posterior_sampler=Langevin(5, 0.1), decoder_lr=1e-3, ratio_lr=1e-3)
    defaults.update(kwargs)
    return MultiStageNCE(decoder, prior, **defaults)


def loader(n_batches: int = 4, batch_size: int = 16) -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(n_batches * batch_size, DATA)), batch_size=batch_size)


def trainer(tmp_path, **kwargs: Any) -> L.Trainer:
    defaults: dict[str, Any] = dict(
        max_epochs=20,
        default_root_dir=str(tmp_path),
        accelerator="cpu",
        inference_mode=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    defaults.update(kwargs)
    return quiet_trainer(**defaults)


class StageRecorder(L.Callback):
    """The stage bookkeeping and a copy of every net's parameters after each training batch."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.states: list[tuple[int, int]] = []
        self.snapshots: list[dict[str, torch.Tensor]] = []
        self.first_state: tuple[int, int] | None = None
        self.stop_after = stop_after

    def on_train_batch_start(self, trainer: L.Trainer, module: Any, *args: Any) -> None:
        if self.first_state is None:
            self.first_state = (module.prior.completed_stages, module.prior.stage_iteration)

    def on_train_batch_end(self, trainer: L.Trainer, module: Any, *args: Any) -> None:
        self.states.append((module.prior.completed_stages, module.prior.stage_iteration))
        self.snapshots.append({k: v.clone() for k, v in module.named_parameters()})
        if self.stop_after is not None and len(self.states) >= self.stop_after:
            trainer.should_stop = True


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], prefix: str) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))


# ------------------------------------------------------------------ the prior
def test_prior_energy_is_the_reference_minus_the_completed_log_ratios() -> None:
    torch.manual_seed(0)
    prior = ProductOfRatiosPrior(LATENT, EnergyMLP(LATENT, hidden=8), n_stages=3, sigma=2.0)
    z = torch.randn(7, LATENT)
    reference = z.square().sum(1) / (2 * 2.0**2)
    assert prior.residual_energy(z) is None and torch.allclose(prior.energy(z), reference)
    for k in range(1, 4):
        prior.complete_stage()
        expected = reference - sum(prior.ratios[j](z) for j in range(k))
        assert torch.allclose(prior.energy(z), expected)
    assert prior.finished
    with pytest.raises(RuntimeError, match="already completed"):
        prior.complete_stage()
    # every stage has its own, independently initialised net
    first, second = (prior.ratios[j].net[0].weight for j in (0, 1))
    assert first is not second and not torch.equal(first, second)


def test_prior_samples_exactly_before_any_stage_and_by_chains_after() -> None:
    torch.manual_seed(0)
    prior = ProductOfRatiosPrior(2, EnergyMLP(2, hidden=8), n_stages=2, sigma=0.5, sampler=Langevin(3, 0.1))
    z, diagnostics = prior.sample(20000, return_diagnostics=True)
    assert diagnostics == {} and abs(float(z.std()) - 0.5) < 0.01
    prior.complete_stage()
    _, diagnostics = prior.sample(10, return_diagnostics=True)
    assert diagnostics["energy"].shape == (3,)  # one entry per Langevin step


# ------------------------------------------------------------------ training
def test_stages_advance_on_schedule_earlier_ratios_stay_frozen_and_training_stops(tmp_path) -> None:
    model = small_model(stage_iterations=[2, 3, 1])
    before = {k: v.clone() for k, v in model.named_parameters()}
    recorder = StageRecorder()
    t = trainer(tmp_path, callbacks=[recorder])
    t.fit(model, loader())
    assert recorder.states == [(0, 1), (1, 0), (1, 1), (1, 2), (2, 0), (3, 0)]
    assert model.prior.finished and t.current_epoch == 2  # 6 iterations: it stopped in epoch 2 of 20
    snaps = recorder.snapshots
    assert changed(before, snaps[1], "prior.ratios.0.") and not changed(before, snaps[1], "prior.ratios.1.")
    assert not changed(snaps[1], snaps[-1], "prior.ratios.0.")  # stage 0's ratio is frozen afterwards
    assert changed(snaps[1], snaps[4], "prior.ratios.1.") and not changed(snaps[4], snaps[-1], "prior.ratios.1.")
    assert changed(snaps[4], snaps[5], "prior.ratios.2.")
    assert changed(before, snaps[-1], "decoder.")  # the generator trains in every stage by default
    assert changed(snaps[4], snaps[5], "decoder.")
    for key in (
        "train/nce_loss",
        "train/logit_pos",
        "train/logit_neg",
        "train/decoder_nll",
        "train/prior_chain_energy_last",
        "train/posterior_chain_grad_norm_last",
        "train/stage",
    ):
        assert key in t.callback_metrics, key


def test_finetune_keeps_the_loss_value_and_trains_every_earlier_ratio(tmp_path) -> None:
    model = small_model(n_stages=2, earlier_ratios="finetune", stage_iterations=2)
    model.prior.complete_stage()
    z = torch.randn(5, LATENT)
    logit = model._stage_logit(z)
    assert torch.allclose(logit, model.prior.ratios[1](z))
    logit.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.prior.ratios[0].parameters())

    model = small_model(n_stages=2, earlier_ratios="finetune", stage_iterations=2)
    recorder = StageRecorder()
    trainer(tmp_path, callbacks=[recorder]).fit(model, loader())
    assert changed(recorder.snapshots[1], recorder.snapshots[3], "prior.ratios.0.")


def test_finetune_steps_every_ratio_of_the_stage_in_progress(tmp_path) -> None:
    """Device: CPU. With ``earlier_ratios="finetune"`` the stage-``k`` loss steps all ``k + 1``
    ratio optimisers (``step_optimizers`` given several): in stage 2 of 3 the parameters of ratios
    0, 1 and 2 all change at every iteration, and the stage's own ratio too in stage 1."""
    torch.manual_seed(0)
    model = small_model(n_stages=3, earlier_ratios="finetune", stage_iterations=2)
    recorder = StageRecorder()
    trainer(tmp_path, callbacks=[recorder]).fit(model, loader(n_batches=6))
    assert recorder.states == [(0, 1), (1, 0), (1, 1), (2, 0), (2, 1), (3, 0)]
    snaps = recorder.snapshots
    for before, after, stage in ((1, 2, 1), (3, 4, 2), (4, 5, 2)):
        for ratio in range(stage + 1):
            assert changed(snaps[before], snaps[after], f"prior.ratios.{ratio}."), (stage, ratio)


def test_generator_can_be_frozen_after_the_first_stage(tmp_path) -> None:
    model = small_model(decoder_training="first_stage", stage_iterations=2)
    recorder = StageRecorder()
    trainer(tmp_path, callbacks=[recorder]).fit(model, loader())
    snaps = recorder.snapshots
    assert changed(snaps[0], snaps[1], "decoder.") and not changed(snaps[1], snaps[-1], "decoder.")


def test_default_schedule_splits_the_run_evenly_over_the_stages(tmp_path) -> None:
    model = small_model(n_stages=3)
    assert model.stage_schedule is None
    trainer(tmp_path, max_epochs=2).fit(model, loader(n_batches=5))
    assert model.stage_schedule == [3, 3, 3] and model.prior.finished  # 10 iterations // 3 stages


def test_default_schedule_counts_updates_under_accumulation(tmp_path) -> None:
    """Device: CPU. Without ``stage_iterations``, 2 epochs of 4 batches accumulated by 2 are 4
    training iterations (updates), not 8 batches: 2 a stage over 2 stages, all completed; the same
    with an integer ``limit_train_batches``, where the split is first checked before training."""
    for limits in ({}, {"limit_train_batches": 4}):
        model = small_model(n_stages=2)
        trainer(tmp_path, max_epochs=2, accumulate_grad_batches=2, **limits).fit(model, loader(n_batches=4))
        assert model.stage_schedule == [2, 2] and model.prior.finished, limits
    with pytest.raises(ValueError, match="2 training iterations cannot fill 3 stages"):
        trainer(tmp_path, max_epochs=1, accumulate_grad_batches=2, limit_train_batches=4).fit(
            small_model(n_stages=3), loader(n_batches=4)
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(stage_iterations=[2, 2]), "one number per stage"),
        (dict(stage_iterations=0), ">= 1"),
        (dict(earlier_ratios="thaw"), "earlier_ratios must be one of"),
        (dict(posterior_prior="full"), "posterior_prior must be one of"),
    ],
)
def test_bad_options_are_clear_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        small_model(**kwargs)


def test_an_unbounded_run_needs_stage_iterations(tmp_path) -> None:
    with pytest.raises(ValueError, match="stage_iterations"):
        trainer(tmp_path, max_epochs=-1, max_steps=-1).fit(small_model(), loader())


def test_max_steps_bounds_the_default_schedule(tmp_path) -> None:
    """Device: CPU. ``max_steps`` counts iterations: 6 of them over 3 stages is 2 a stage, however
    many epochs ``max_epochs`` would allow."""
    model = small_model(n_stages=3)
    trainer(tmp_path, max_epochs=-1, max_steps=6).fit(model, loader(n_batches=4))
    assert model.stage_schedule == [2, 2, 2] and model.prior.finished


def test_too_few_iterations_for_the_stages_are_refused_before_training(tmp_path) -> None:
    """Device: CPU. An integer ``limit_train_batches`` times ``max_epochs`` (3) cannot fill 4 stages:
    refused when the run starts, in one line, before any batch (the weights are untouched; the CLI
    refuses it at build: ``tests/cli/test_lightning_flags.py``)."""
    model = small_model(n_stages=4)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="3 training iterations cannot fill 4 stages") as refused:
        trainer(tmp_path, max_epochs=1, limit_train_batches=3).fit(model, loader(n_batches=8))
    assert "\n" not in str(refused.value)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


# ---------------------------------------------------------- checkpoints, resume
def test_resume_mid_stage_continues_that_stage_with_the_same_product_prior(tmp_path) -> None:
    torch.manual_seed(0)
    model = small_model(n_stages=3)  # schedule decided at the start: 3 epochs x 4 batches / 3 = [4, 4, 4]
    first = trainer(tmp_path, max_epochs=3, callbacks=[StageRecorder(stop_after=6)])
    first.fit(model, loader())
    assert (model.prior.completed_stages, model.prior.stage_iteration) == (1, 2)
    path = os.path.join(tmp_path, "mid_stage.ckpt")
    first.save_checkpoint(path)

    loaded = MultiStageNCE.load_from_checkpoint(path, weights_only=True)
    assert (loaded.prior.completed_stages, loaded.prior.stage_iteration) == (1, 2)
    assert loaded.stage_schedule == [4, 4, 4]
    z = torch.randn(9, LATENT)
    assert torch.equal(loaded.prior.energy(z), model.prior.energy(z))
    assert torch.equal(loaded.prior.residual_energy(z), -model.prior.ratios[0](z))

    recorder = StageRecorder()
    resumed = small_model(n_stages=3)
    trainer(tmp_path, max_epochs=10, callbacks=[recorder]).fit(resumed, loader(), ckpt_path=path)
    assert recorder.first_state == (1, 2)  # the same stage, where it stopped
    assert resumed.stage_schedule == [4, 4, 4]  # kept, not re-split over the longer run
    assert len(recorder.states) == 6 and resumed.prior.finished  # 12 iterations in all


def test_user_api_and_the_configurable_posterior_and_score(tmp_path) -> None:
    model = small_model(stage_iterations=1)
    trainer(tmp_path).fit(model, loader())
    x = torch.randn(6, DATA)
    torch.manual_seed(1)
    samples, latents, recon, score = model.generate(5), model.infer(x), model.reconstruct(x), model.score(x)
    assert [v.shape for v in (samples, latents, recon, score)] == [(5, DATA), (6, LATENT), (6, DATA), (6,)]
    z = torch.randn(6, LATENT)
    nll = model.decoder.nll(x, z)
    assert torch.allclose(model.anomaly_score(nll, z), nll + model.prior.energy(z))
    assert torch.allclose(model.posterior_energy(x)(z), nll + model.prior.residual_energy(z))

    model.hparams.anomaly_score = "nll"
    model.hparams.posterior_prior = "base"
    assert torch.equal(model.anomaly_score(nll, z), nll)
    assert torch.allclose(model.posterior_energy(x)(z), nll)


class AssertRanksAgree(L.Callback):
    """On every rank at the end: all ranks hold the same parameters and the same stage state."""

    def on_train_end(self, trainer: L.Trainer, module: Any) -> None:
        flat = torch.cat([p.detach().flatten() for p in module.parameters()])
        gathered = module.all_gather(flat)
        assert torch.allclose(gathered[0], gathered[1], atol=1e-6), "ranks diverged: gradients not averaged"
        stages = module.all_gather(module.prior.stage_state)
        assert torch.equal(stages[0], stages[1]) and stages[0].tolist() == [2, 0]


@pytest.mark.slow
def test_two_process_ddp_crosses_stage_boundaries_in_step(tmp_path) -> None:
    model = small_model(n_stages=2, stage_iterations=3)  # 8 batches over 2 ranks: 4 iterations per epoch
    t = trainer(tmp_path, strategy=forked_ranks(), devices=2, max_epochs=5, callbacks=[AssertRanksAgree()])
    t.fit(model, loader(n_batches=8))
    assert model.prior.finished  # the trained state comes back to the main process


def test_persistent_negatives_continue_their_chains_from_stage_one_on(tmp_path) -> None:
    chains = PersistentChains(Langevin(5, 0.4), [LATENT], buffer_size=32, reinit_prob=0.0)
    decoder = GaussianDecoder(MLPGenerator(LATENT, [DATA], hidden=16, out_activation=None), sigma=0.3)
    prior = ProductOfRatiosPrior(LATENT, EnergyMLP(LATENT, hidden=16), n_stages=2, sampler=chains)
    model = MultiStageNCE(decoder, prior, posterior_sampler=Langevin(5, 0.1), stage_iterations=2)
    initial = chains.chains.clone()
    recorder = StageRecorder()
    trainer(tmp_path, callbacks=[recorder]).fit(model, loader())
    assert recorder.states[-1] == (2, 0)
    assert not torch.equal(chains.chains, initial)  # stage 1 drew its negatives from the buffer
    assert "prior.sampler.chains" in model.state_dict()  # and the buffer is checkpointed
