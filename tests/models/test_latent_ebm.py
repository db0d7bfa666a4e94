"""LatentEBM as a LightningModule: training, checkpoints, resume, user API, DDP."""

from __future__ import annotations

import os

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lebm.models import GaussianPrior, LatentEBM, TiltedGaussianPrior
from lebm.models.nets import EnergyMLP, GaussianDecoder, MLPGenerator
from lebm.samplers import Langevin


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
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        accelerator="cpu",
        inference_mode=False,
    )
    defaults.update(kwargs)
    return L.Trainer(**defaults)


def test_training_updates_both_nets_and_logs_the_chains(tmp_path) -> None:
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    t = trainer(tmp_path, enable_checkpointing=False)
    t.fit(model, loader(), loader())
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("decoder.") for k in changed) and any(k.startswith("prior.") for k in changed)
    for key in ("train/decoder_nll", "train/prior_loss", "train/energy_pos", "train/energy_neg",
                "train/prior_chain_grad_norm_last", "train/posterior_chain_energy_last", "val/nll"):
        assert key in t.callback_metrics, key
    assert t.callback_metrics["train/prior_loss"] == pytest.approx(
        float(t.callback_metrics["train/energy_pos"] - t.callback_metrics["train/energy_neg"]), abs=1e-5
    )


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


def test_validation_also_works_under_inference_mode(tmp_path) -> None:
    model = small_model()
    result = trainer(tmp_path, inference_mode=True).validate(model, loader())
    assert result[0]["val/nll"] > 0


def test_checkpoint_round_trip_and_user_api(tmp_path) -> None:
    model = small_model()
    t = trainer(tmp_path, enable_checkpointing=False)
    t.fit(model, loader())
    path = os.path.join(tmp_path, "model.ckpt")
    t.save_checkpoint(path)
    loaded = LatentEBM.load_from_checkpoint(path, weights_only=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    assert loaded.posterior_sampler.n_steps == 5 and loaded.prior.sampler.n_steps == 10
    x = torch.randn(6, 2)
    torch.manual_seed(3)
    a = (model.generate(5), model.infer(x), model.reconstruct(x), model.score(x))
    torch.manual_seed(3)
    b = (loaded.generate(5), loaded.infer(x), loaded.reconstruct(x), loaded.score(x))
    assert [v.shape for v in a] == [(5, 2), (6, 4), (6, 2), (6,)]
    for u, v in zip(a, b):
        assert torch.allclose(u, v)


def test_score_is_the_joint_energy_at_posterior_samples() -> None:
    model = small_model()
    x = torch.randn(8, 2)
    torch.manual_seed(1)
    score = model.score(x)
    torch.manual_seed(1)
    z = model.infer(x)
    expected = model.decoder.nll(x, z) + model.prior.energy(z)
    assert torch.allclose(score, expected)


def test_a_users_own_module_is_passed_again_when_loading(tmp_path) -> None:
    decoder = GaussianDecoder(nn.Linear(4, 2), sigma=0.3)  # nn.Linear is not an lebm component
    model = LatentEBM(decoder, TiltedGaussianPrior(4, EnergyMLP(4, hidden=8)))
    t = trainer(tmp_path, max_steps=1, enable_checkpointing=False, limit_val_batches=0)
    t.fit(model, loader())
    path = os.path.join(tmp_path, "custom.ckpt")
    t.save_checkpoint(path)
    with pytest.raises(ValueError, match="load_from_checkpoint"):
        LatentEBM.load_from_checkpoint(path)
    loaded = LatentEBM.load_from_checkpoint(path, decoder=GaussianDecoder(nn.Linear(4, 2), sigma=0.3))
    assert torch.equal(loaded.decoder.net.weight, model.decoder.net.weight)


def test_resume_continues_the_same_run(tmp_path) -> None:
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = trainer(tmp_path, max_epochs=1, callbacks=[checkpoints], limit_val_batches=0)
    first.fit(small_model(), loader())
    assert (tmp_path / "ckpt" / "last.ckpt").exists()
    resumed_model = small_model()
    second = trainer(tmp_path, max_epochs=2, callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)],
                     limit_val_batches=0)
    second.fit(resumed_model, loader(), ckpt_path="last")
    assert second.current_epoch == 2 and second.global_step == 2 * first.global_step
    adam_steps = second.optimizers[0].state_dict()["state"][0]["step"]
    assert int(adam_steps) == second.global_step // 2  # each iteration steps both optimisers once


class AssertParametersInSync(L.Callback):
    """On every rank: gather the flattened parameters and check all ranks hold the same values."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        flat = torch.cat([p.detach().flatten() for p in pl_module.parameters()])
        gathered = pl_module.all_gather(flat)
        assert gathered.shape[0] == 2
        assert torch.allclose(gathered[0], gathered[1], atol=1e-6), "ranks diverged: gradients not averaged"
        assert not torch.allclose(flat, pl_module._initial_flat), "parameters did not change"


def test_two_process_ddp_spawn_keeps_ranks_in_sync(tmp_path) -> None:
    model = small_model()
    model._initial_flat = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    t = trainer(
        tmp_path,
        strategy="ddp_spawn",
        devices=2,
        max_epochs=2,
        enable_checkpointing=False,
        callbacks=[AssertParametersInSync()],
    )
    t.fit(model, loader(n=256), loader(n=64))
    assert t.callback_metrics["val/nll"] > 0


def test_bf16_mixed_precision_keeps_chain_states_in_fp32(tmp_path) -> None:
    model = small_model()
    t = trainer(tmp_path, precision="bf16-mixed", enable_checkpointing=False, limit_val_batches=0)
    t.fit(model, loader())
    assert torch.isfinite(t.callback_metrics["train/prior_loss"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = model.infer(torch.randn(4, 2))
        z_prior = model.prior.sample(4)
    assert z.dtype == torch.float32 and z_prior.dtype == torch.float32
