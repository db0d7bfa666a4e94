"""LatentEBM as a LightningModule: what its training step does, its baseline, resume and the
anomaly score (the shared contract — API shapes, checkpoints, bf16, DDP — is in
test_method_contract.py)."""

from __future__ import annotations

import os

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lebm.models import GaussianPrior, LatentEBM, TiltedGaussianPrior
from lebm.nets import EnergyMLP, GaussianDecoder, MLPGenerator
from lebm.samplers import Langevin
from tests.helpers.trainers import quiet_trainer


def small_model(latent_dim: int = 4, data_dim: int = 2, learn_prior: bool = True) -> LatentEBM:
    decoder = GaussianDecoder(MLPGenerator(latent_dim, [data_dim], hidden=32, out_activation=None), sigma=0.3)
    prior = (
        TiltedGaussianPrior(latent_dim, EnergyMLP(latent_dim, hidden=32), sampler=Langevin(10, 0.4))
        if learn_prior
        else GaussianPrior(latent_dim)
    )
    return LatentEBM(decoder, prior, posterior_sampler=Langevin(5, 0.1), decoder_lr=1e-3, prior_lr=1e-3)


def loader(n: int = 128, dim: int = 2, batch_size: int = 32) -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(n, dim)), batch_size=batch_size)


def trainer(tmp_path, **kwargs) -> L.Trainer:
    defaults = dict(
        max_epochs=1,
        enable_checkpointing=True,  # Lightning's default: the resume test hands it a ModelCheckpoint
        default_root_dir=str(tmp_path),
        accelerator="cpu",
        inference_mode=False,
    )
    defaults.update(kwargs)
    return quiet_trainer(**defaults)


def test_training_updates_both_nets_and_logs_the_chains(tmp_path) -> None:
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    t = trainer(tmp_path, enable_checkpointing=False)
    t.fit(model, loader(), loader())
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("decoder.") for k in changed) and any(k.startswith("prior.") for k in changed)
    for key in (
        "train/decoder_nll",
        "train/prior_loss",
        "train/energy_pos",
        "train/energy_neg",
        "train/prior_chain_grad_norm_last",
        "train/posterior_chain_energy_last",
        "val/nll",
    ):
        assert key in t.callback_metrics, key


def test_learning_rates_decay_once_per_epoch(tmp_path) -> None:
    model = small_model()
    t = trainer(tmp_path, max_epochs=3, enable_checkpointing=False, limit_val_batches=0)
    t.fit(model, loader())
    decoder_opt, prior_opt = t.optimizers
    assert decoder_opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.998**3)
    assert prior_opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.998**3)


def test_gaussian_prior_baseline_trains_the_decoder_only(tmp_path) -> None:
    model = small_model(learn_prior=False)
    t = trainer(tmp_path, enable_checkpointing=False)
    t.fit(model, loader(), loader())
    assert len(t.optimizers) == 1 and "train/prior_loss" not in t.callback_metrics


def test_a_users_own_module_is_passed_again_when_loading(tmp_path) -> None:
    decoder = GaussianDecoder(nn.Linear(4, 2), sigma=0.3)  # nn.Linear is not an lebm component
    model = LatentEBM(decoder, TiltedGaussianPrior(4, EnergyMLP(4, hidden=8)))
    t = trainer(tmp_path, max_steps=1, enable_checkpointing=False, limit_val_batches=0)
    t.fit(model, loader())
    path = os.path.join(tmp_path, "custom.ckpt")
    with pytest.warns(UserWarning, match="cannot record") as saved_warning:
        t.save_checkpoint(path)
    with pytest.raises(ValueError, match="load_from_checkpoint"):
        LatentEBM.load_from_checkpoint(path)
    assert "cannot record `decoder`" in str(saved_warning[0].message)
    assert "load_from_checkpoint(path, decoder=" in str(saved_warning[0].message)
    loaded = LatentEBM.load_from_checkpoint(path, decoder=GaussianDecoder(nn.Linear(4, 2), sigma=0.3))
    assert torch.equal(loaded.decoder.net.weight, model.decoder.net.weight)


def test_resume_continues_the_same_run(tmp_path) -> None:
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = trainer(tmp_path, max_epochs=1, callbacks=[checkpoints], limit_val_batches=0)
    first.fit(small_model(), loader())
    assert (tmp_path / "ckpt" / "last.ckpt").exists()
    resumed_model = small_model()
    second = trainer(
        tmp_path,
        max_epochs=2,
        callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)],
        limit_val_batches=0,
    )
    second.fit(resumed_model, loader(), ckpt_path="last")
    assert second.current_epoch == 2 and second.global_step == 2 * first.global_step
    adam_steps = second.optimizers[0].state_dict()["state"][0]["step"]
    assert int(adam_steps) == second.global_step  # each step (iteration) steps both optimisers once


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_the_anomaly_score_ranks_points_off_the_data_higher(tmp_path) -> None:
    """score(x) = -log p(x, z) at posterior samples: after training on data around two modes, points
    far from both score higher than held-out data."""
    torch.manual_seed(0)
    model = small_model()
    signs = torch.randint(0, 2, (512, 1)) * 2.0 - 1.0
    data = torch.cat([signs, torch.zeros_like(signs)], 1) + 0.1 * torch.randn(512, 2)
    trainer(tmp_path, max_epochs=30, enable_checkpointing=False, limit_val_batches=0).fit(
        model, DataLoader(TensorDataset(data), batch_size=64)
    )
    inliers = torch.cat([signs[:64], torch.zeros(64, 1)], 1) + 0.1 * torch.randn(64, 2)
    outliers = torch.randn(64, 2) * 0.1 + torch.tensor([0.0, 3.0])
    assert model.score(outliers).min() > model.score(inliers).max()
