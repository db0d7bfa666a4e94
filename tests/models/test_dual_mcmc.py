"""DualMCMC (Cui & Han 2023): the official step order, loss signs, temperature, BatchNorm modes,
the user API, the abort rule, build-time checks, and learning on 2-D toys.

Checkpoints, resume, validation under inference mode, bf16 and the 2-rank DDP invariants are in
the method contract suite (``test_method_contract.py``, case ``DualMCMC``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from cases import DATA, LATENT, dual_mcmc, toy_loader
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lebm.models import DualMCMC, TrainingDiverged
from lebm.nets import (
    ConvEncoder,
    EnergyMLP,
    GaussianDecoder,
    MLPEncoder,
    MLPGenerator,
    SNGANGenerator,
    SNResNetEnergy,
)
from lebm.samplers import Langevin
from tests.helpers.trainers import quiet_trainer


def fit(model: DualMCMC, loader: DataLoader, tmp_path: Path, ckpt_path: str | None = None, **kwargs: Any) -> L.Trainer:
    options: dict[str, Any] = dict(max_epochs=1, accelerator="cpu", default_root_dir=str(tmp_path))
    options.update(kwargs)
    trainer = quiet_trainer(**options)
    trainer.fit(model, loader, ckpt_path=ckpt_path)
    return trainer


def mlp_parts(latent: int = LATENT) -> tuple[GaussianDecoder, EnergyMLP, MLPEncoder]:
    decoder = GaussianDecoder(MLPGenerator(latent, [DATA], hidden=16, out_activation=None), sigma=0.3)
    return decoder, EnergyMLP(DATA, hidden=16), MLPEncoder([DATA], latent, hidden=16)


# ------------------------------------------------------------------------ settings
def test_the_ebm_temperature_is_the_data_chains_n_over_s_squared() -> None:
    """The official ``langevin_x`` of Cui & Han (NeurIPS 2023): T = (n / s)^2, 4e-6 on CIFAR-10 (s 0.5)
    and 1.1e-5 on CelebA-64 (s 0.3)."""
    assert DualMCMC(*mlp_parts()).temperature == pytest.approx(4e-6)
    celeba = DualMCMC(*mlp_parts(), data_sampler=Langevin(30, 0.3, noise_std=1e-3))
    assert celeba.temperature == pytest.approx(1.1e-5, rel=0.02)  # (1e-3 / 0.3)^2 = 1.11e-5
    assert DualMCMC(*mlp_parts(), temperature=1).temperature == 1.0
    with pytest.raises(ValueError, match="temperature must be 'auto' or a number > 0"):
        DualMCMC(*mlp_parts(), temperature=0)


def test_defaults_are_the_official_settings() -> None:
    model = DualMCMC(*mlp_parts())
    hp = model.hparams
    assert (hp.energy_lr, hp.decoder_lr, hp.encoder_lr) == (1e-4, 3e-4, 1e-4)
    assert tuple(hp.betas) == (0.0, 0.9)
    assert (hp.energy_weight_decay, hp.decoder_weight_decay, hp.encoder_weight_decay) == (0.0, 5e-4, 5e-4)
    assert (hp.data_weight, hp.sample_weight, hp.inference_sample_weight) == (1.0, 50.0, 0.1)
    chains = {
        "data": model.data_sampler,
        "posterior": model.posterior_sampler,
        "test": model.test_data_sampler,
    }
    steps = {name: (c.n_steps, c.step_size, c.noise) for name, c in chains.items()}
    assert steps == {"data": (30, 0.5, 1e-3), "posterior": (10, 0.1, 0.1), "test": (70, 0.4, 1e-3)}
    assert model.guard.limits == {"train/ebm_contrast": 1e4}
    assert hp.evaluation_batchnorm == "batch" and hp.evaluation_power_iteration is True  # never eval() there


# -------------------------------------------------------------------------- the step
class Journal:
    """Records, in order, every chain run (with its start) and every optimiser step."""

    def __init__(self, model: DualMCMC) -> None:
        self.events: list[tuple[str, Any]] = []
        for name in ("data_sampler", "posterior_sampler"):
            self._wrap_chain(model, name)
        self.model = model

    def _wrap_chain(self, model: DualMCMC, name: str) -> None:
        chain = getattr(model, name)
        run = chain.run

        def recorded(target, z, *, generator=None):
            self.events.append((name, z.detach().clone()))
            return run(target, z, generator=generator)

        chain.run = recorded

    def wrap_optimizers(self, trainer: L.Trainer) -> None:
        for name, optimizer in zip(("decoder", "encoder", "energy"), trainer.optimizers, strict=True):
            step = optimizer.step

            def recorded(*args, _name=name, _step=step, **kwargs):
                self.events.append((f"step {_name}", None))
                return _step(*args, **kwargs)

            optimizer.step = recorded


class JournalOptimizers(L.Callback):
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.journal.wrap_optimizers(trainer)


def test_one_iteration_follows_the_official_order(tmp_path: Path) -> None:
    """Revise samples; revise latents; update G; update I; re-revise g'(z) with the updated G; update E."""
    model = dual_mcmc()
    journal = Journal(model)
    fit(model, toy_loader(n_batches=1), tmp_path, callbacks=[JournalOptimizers(journal)])
    names = [name for name, _ in journal.events]
    assert names == [
        "data_sampler",
        "posterior_sampler",
        "step decoder",
        "step encoder",
        "data_sampler",
        "step energy",
    ]
    first_start, second_start = journal.events[0][1], journal.events[4][1]
    assert not torch.allclose(first_start, second_start)  # the generator moved in between
    # both start from g(z) of the same z: the difference is the generator's update only
    assert (first_start - second_start).abs().max() < 0.1


@pytest.mark.parametrize("negatives,chains", [("revised", 1), ("generator", 1), ("revised_again", 2)])
def test_the_ebm_negatives_option_sets_the_data_chains_per_iteration(negatives: str, chains: int, tmp_path) -> None:
    model = dual_mcmc()
    model.hparams.ebm_negatives = negatives
    journal = Journal(model)
    fit(model, toy_loader(n_batches=1), tmp_path)
    assert [name for name, _ in journal.events].count("data_sampler") == chains


def test_the_ebm_step_lowers_the_data_energy_below_the_samples(tmp_path: Path) -> None:
    """Only the EBM learns (the other learning rates are 0): mean E(x) - mean E(x~) goes down, i.e.
    the energy of data falls relative to the generator's revised samples (the MLE sign)."""
    torch.manual_seed(0)
    model = DualMCMC(*mlp_parts(), decoder_lr=0.0, encoder_lr=0.0, energy_lr=1e-2, temperature=1.0)
    x = next(iter(toy_loader(n_batches=1, batch_size=64)))[0]

    def contrast() -> float:
        with torch.no_grad():
            z = torch.randn(256, LATENT, generator=torch.Generator().manual_seed(1))
            return float(model.energy_net(x).mean() - model.energy_net(model.decoder.decode(z)).mean())

    before = contrast()
    fit(model, toy_loader(n_batches=4, batch_size=64), tmp_path, max_epochs=5)
    assert contrast() < before - 0.5


# ---------------------------------------------------------------------- BatchNorm modes
class BatchNormWatch:
    """Records ``(training, track_running_stats)`` of the generator's first BatchNorm at each call."""

    def __init__(self, generator: nn.Module) -> None:
        self.layer = next(m for m in generator.modules() if isinstance(m, nn.BatchNorm2d))
        self.calls: list[tuple[bool, bool]] = []
        self.layer.register_forward_pre_hook(self._record)

    def _record(self, module: nn.Module, args: Any) -> None:
        self.calls.append((module.training, module.track_running_stats))


def image_model(
    evaluation_batchnorm: str = "batch",
    generator_options: dict[str, Any] | None = None,
    encoder_options: dict[str, Any] | None = None,
    **kwargs: Any,
) -> DualMCMC:
    generator = SNGANGenerator(latent_dim=4, channels=1, image_size=8, widths=(8, 4), **(generator_options or {}))
    options: dict[str, Any] = dict(
        data_sampler=Langevin(2, 0.5, noise_std=1e-3),
        posterior_sampler=Langevin(3, 0.1),
        test_data_sampler=Langevin(2, 0.4, noise_std=1e-3),
        evaluation_batchnorm=evaluation_batchnorm,
    )
    options.update(kwargs)
    return DualMCMC(
        GaussianDecoder(generator, sigma=0.3),
        SNResNetEnergy(channels=1, image_size=8, widths=(4, 8), downsample=(True, True)),
        ConvEncoder(latent_dim=4, channels=1, image_size=8, nif=4, stem=False, **(encoder_options or {})),
        **options,
    )


def test_the_generator_uses_batch_statistics_in_training_chains_as_the_official_code(tmp_path: Path) -> None:
    """In training every generator call, the posterior chain's included, normalises with the batch
    and updates the running statistics (the official code never leaves train mode)."""
    model = image_model()
    watch = BatchNormWatch(model.decoder.net)
    images = torch.rand(8, 1, 8, 8) * 2 - 1

    class FromTheFirstStep(L.Callback):  # the build-time shape check before it probes in evaluation mode
        def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            watch.calls.clear()

    fit(model, DataLoader(TensorDataset(images), batch_size=8), tmp_path, callbacks=[FromTheFirstStep()])
    # proposals, 3 posterior steps, the G loss (2 calls), the re-revision's proposals
    assert len(watch.calls) >= 5
    assert set(watch.calls) == {(True, True)}
    assert int(watch.layer.num_batches_tracked) == len(watch.calls)


@pytest.mark.parametrize("mode,expected", [("batch", (True, False)), ("running", (False, True))])
def test_evaluation_uses_the_stated_batchnorm_statistics(mode: str, expected: tuple[bool, bool]) -> None:
    """``batch``: batch statistics without touching the running ones (the official evaluation);
    ``running``: PyTorch's eval mode."""
    model = image_model(mode).eval()
    watch = BatchNormWatch(model.decoder.net)
    running = watch.layer.running_mean.clone()
    x = torch.rand(6, 1, 8, 8) * 2 - 1
    model.generate(6)
    model.infer(x)
    model.reconstruct(x)
    model.validation_step((x,), 0)
    assert watch.calls and set(watch.calls) == {expected}
    assert torch.equal(watch.layer.running_mean, running)
    assert model.decoder.net.training is False  # the model's own mode is left as it was


# ------------------------------------------------------------- spectral norm at test time
def spectral_norm_vectors(model: DualMCMC) -> dict[str, torch.Tensor]:
    """The power iteration's ``_u``/``_v`` of every spectral-norm layer of the energy net with more
    than one entry (a 1-entry vector is always +-1)."""
    state = model.energy_net.state_dict()
    return {k: v.clone() for k, v in state.items() if k.endswith(("_u", "_v")) and v.numel() > 1}


def stale_spectral_norm(model: DualMCMC) -> None:
    """Move every raw weight, so that the stored singular vectors are no longer converged."""
    with torch.no_grad():
        for module in model.energy_net.modules():
            if hasattr(module, "parametrizations"):
                original = module.parametrizations.weight.original
                original.mul_(1 + torch.rand(original.shape, generator=torch.Generator().manual_seed(0)))


class SpectralNormWatch:
    """Records, at each call of the energy net's first conv during a chain, ``(the conv's mode,
    its spectral-norm parametrization's mode)``."""

    def __init__(self, model: DualMCMC) -> None:
        self.conv = next(m for m in model.energy_net.modules() if isinstance(m, nn.Conv2d))
        self.calls: list[tuple[bool, bool]] = []
        self.conv.register_forward_pre_hook(self._record)

    def _record(self, module: nn.Module, args: Any) -> None:
        if torch.is_grad_enabled():  # the chain's evaluations (the chain turns gradients on)
            self.calls.append((module.training, module.parametrizations.weight[0].training))


@pytest.mark.parametrize("power_iteration", [True, False])
def test_test_time_chains_run_the_spectral_norms_power_iteration_as_the_official_code(power_iteration: bool) -> None:
    """The official code never calls eval(): its FID chain (70 steps) updates the spectral norm's
    vectors at every energy evaluation. With ``evaluation_power_iteration`` (default) the chains of
    an eval-mode model do too: only the spectral-norm parametrizations switch to train mode, during
    the chain; off, the vectors stay as stored. Every mode is restored afterwards."""
    model = image_model(evaluation_power_iteration=power_iteration, test_data_sampler=Langevin(5, 0.4)).eval()
    stale_spectral_norm(model)
    watch = SpectralNormWatch(model)
    before = spectral_norm_vectors(model)
    model.generate(6, generator=torch.Generator().manual_seed(1))
    assert len(watch.calls) == 5
    assert set(watch.calls) == {(False, power_iteration)}  # the conv itself stays in eval mode
    after = spectral_norm_vectors(model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == (set(before) if power_iteration else set())
    assert not any(m.training for m in model.modules())
    # revise() on an eval-mode model is the same chain
    watch.calls.clear()
    model.revise(torch.zeros(3, 1, 8, 8), sampler=Langevin(2, 0.4))
    assert set(watch.calls) == {(False, power_iteration)}
    # in training the nets are in train mode anyway: the option changes nothing there
    model.train()
    watch.calls.clear()
    model.revise(torch.zeros(3, 1, 8, 8))
    assert set(watch.calls) == {(True, True)}


def test_the_power_iteration_at_test_time_changes_the_revised_samples() -> None:
    """On stale vectors the iterating chain normalises by other singular values: other samples
    from the same latents and noise than eval-mode spectral norm gives."""
    revised = {}
    for power_iteration in (True, False):
        torch.manual_seed(0)
        model = image_model(evaluation_power_iteration=power_iteration, test_data_sampler=Langevin(5, 0.4)).eval()
        stale_spectral_norm(model)
        revised[power_iteration] = model.generate(6, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(revised[True], revised[False], atol=1e-6)


# -------------------------------------------------------------- checkpoints of earlier versions
def earlier_checkpoint(tmp_path: Path) -> tuple[Path, DualMCMC]:
    """A checkpoint as lebm wrote it before align_corners, head_bias and evaluation_power_iteration
    existed: the nets of that time (half-pixel up-sampling, bias-free heads), those arguments absent
    from the recorded hyperparameters. Returns it and the model it was saved from."""
    torch.manual_seed(0)
    model = image_model(generator_options={"align_corners": False}, encoder_options={"head_bias": False})
    images = torch.rand(16, 1, 8, 8) * 2 - 1
    trainer = fit(model, DataLoader(TensorDataset(images), batch_size=8), tmp_path, max_steps=1)  # 1 iteration
    path = tmp_path / "earlier.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    hparams = checkpoint["hyper_parameters"]
    del hparams["decoder"]["init_args"]["net"]["init_args"]["align_corners"]
    del hparams["encoder"]["init_args"]["head_bias"]
    del hparams["evaluation_power_iteration"]
    assert not any("head.bias" in key for key in checkpoint["state_dict"])
    torch.save(checkpoint, path)
    return path, model


def test_checkpoints_of_earlier_versions_load_as_the_nets_they_were_trained_as(tmp_path: Path) -> None:
    """Loading: the generator up-samples with align_corners=False, the encoder heads get zero
    biases, so every output is the saved model's; a new checkpoint records align_corners=False."""
    path, saved = earlier_checkpoint(tmp_path)
    with pytest.warns(UserWarning, match="predates SNGANGenerator's align_corners"):
        loaded = DualMCMC.load_from_checkpoint(path, map_location="cpu")
    generator = loaded.decoder.net
    assert generator.align_corners is False
    assert all(not m.align_corners for m in generator.modules() if isinstance(m, nn.Upsample))
    assert loaded.hparams.decoder["init_args"]["net"]["init_args"]["align_corners"] is False
    assert torch.equal(loaded.encoder.mean_head.bias, torch.zeros(4))
    assert torch.equal(loaded.encoder.logvar_head.bias, torch.zeros(4))
    saved.eval(), loaded.eval()
    x = torch.rand(6, 1, 8, 8) * 2 - 1
    z = torch.randn(6, 4)
    with torch.no_grad():
        assert torch.equal(saved.decoder.decode(z), loaded.decoder.decode(z))
        assert torch.equal(saved.encoder(x).mean, loaded.encoder(x).mean)
        assert torch.equal(saved.encoder(x).logvar, loaded.encoder(x).logvar)
    assert loaded.hparams.evaluation_power_iteration is True  # the new default applies
    # a checkpoint of the current version keeps its settings (no switch, no warning)
    current = image_model()
    current.on_load_checkpoint({"hyper_parameters": dict(current.hparams)})
    assert current.decoder.net.align_corners is True


def test_training_resumes_from_a_checkpoint_of_an_earlier_version(tmp_path: Path) -> None:
    """The encoder's Adam state lacks the head biases: they get fresh slots and learn from the next
    step (the checkpoint holds one iteration, inside epoch 0 of two batches, which stepped 3
    optimisers; the resumed fit trains the rest of epoch 0 and epoch 1: three more)."""
    path, _ = earlier_checkpoint(tmp_path)
    model = image_model()
    images = torch.rand(16, 1, 8, 8) * 2 - 1
    with pytest.warns(UserWarning, match="predates"):
        fit(model, DataLoader(TensorDataset(images), batch_size=8), tmp_path, ckpt_path=str(path), max_epochs=2)
    assert model.decoder.net.align_corners is False
    assert model.encoder.mean_head.bias.abs().sum() > 0 and model.encoder.logvar_head.bias.abs().sum() > 0
    state = model.trainer.optimizers[1].state
    assert all(int(state[p]["step"]) == 3 for p in (model.encoder.mean_head.bias, model.encoder.logvar_head.bias))
    assert int(state[model.encoder.mean_head.weight]["step"]) == 4  # the saved slots go on counting


# ------------------------------------------------------------------------------ user API
def test_generate_revises_the_generators_samples_towards_low_energy() -> None:
    torch.manual_seed(0)
    model = DualMCMC(*mlp_parts(), test_data_sampler=Langevin(20, 0.4, noise_std=1e-3)).eval()
    raw = model.generate(256, revise=False, generator=torch.Generator().manual_seed(4))
    revised = model.generate(256, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        z = torch.randn(256, LATENT, generator=torch.Generator().manual_seed(4))
        assert torch.equal(raw, model.decoder.decode(z))  # revise=False: g(z) of the same z
        assert (model.energy_net(revised) < model.energy_net(raw)).float().mean() > 0.9


def test_infer_refines_the_encoders_mean_and_score_is_the_energy() -> None:
    torch.manual_seed(0)
    model = DualMCMC(*mlp_parts(), posterior_sampler=Langevin(30, 0.1)).eval()
    x = torch.randn(128, DATA)
    mean = model.infer(x, refine=False)
    with torch.no_grad():
        assert torch.equal(mean, model.encoder(x).mean)
        # "Inf + L": the chain starts at the encoder's mean and descends -log p(x, z) (noise off here)
        refined = model.infer(x, sampler=Langevin(30, 0.3, noise_std=0.0))
        assert (model.joint_energy(x, refined) < model.joint_energy(x, mean)).all()
        assert torch.equal(model.score(x), model.energy_net(x))
    outputs = model.validation_step((x,), 0)
    assert set(outputs) == set(model.evaluation_outputs) == {"nll", "score", "mse", "mse_inf"}


# ----------------------------------------------------------------------- abort and checks
class Amplified(nn.Module):
    def __init__(self, net: nn.Module, factor: float) -> None:
        super().__init__()
        self.net, self.factor = net, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * self.factor


def test_the_official_abort_rule_stops_at_a_contrast_beyond_1e4(tmp_path: Path) -> None:
    decoder, energy, encoder = mlp_parts()
    torch.manual_seed(0)
    model = DualMCMC(decoder, Amplified(energy, 1e7), encoder)
    with pytest.raises(TrainingDiverged, match="train/ebm_contrast"):
        fit(model, toy_loader(n_batches=2), tmp_path)


def test_mismatched_nets_are_named_when_the_run_is_built() -> None:
    decoder = GaussianDecoder(SNGANGenerator(latent_dim=4, channels=1, image_size=8, widths=(8, 4)), 0.3)
    encoder = ConvEncoder(latent_dim=4, channels=1, image_size=8, nif=4, stem=False)
    rgb_energy = SNResNetEnergy(channels=3, image_size=8, widths=(4, 8), downsample=(True, True))
    with pytest.raises(ValueError, match=r"energy net \(SNResNetEnergy\) cannot take the generator's images"):
        DualMCMC(decoder, rgb_energy, encoder).check_run()
    energy = SNResNetEnergy(channels=1, image_size=8, widths=(4, 8), downsample=(True, True))
    wide_encoder = ConvEncoder(latent_dim=6, channels=1, image_size=8, nif=4, stem=False)
    with pytest.raises(ValueError, match=r"latent size is 6 \(model.init_args.encoder.init_args.latent_dim\)"):
        DualMCMC(decoder, energy, wide_encoder).check_run()


# ------------------------------------------------------------------------------ learning
CENTERS = torch.tensor([[1.5, 1.5], [1.5, -1.5], [-1.5, 1.5], [-1.5, -1.5]])
EDGES = torch.linspace(-3, 3, 31)


def mixture(n: int, seed: int, std: float = 0.2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return CENTERS[torch.randint(0, 4, (n,), generator=generator)] + std * torch.randn(n, 2, generator=generator)


def histogram(x: torch.Tensor) -> torch.Tensor:
    counts = torch.histogramdd(x.clamp(-2.999, 2.999), bins=[EDGES, EDGES]).hist
    return counts / counts.sum()


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * float((p - q).abs().sum())


def toy_model(**kwargs: Any) -> DualMCMC:
    """MLP nets on 2-D data; chains at temperature 1 (noise = step), so that exp(-E) is the EBM's density."""
    options: dict[str, Any] = dict(
        data_sampler=Langevin(60, 0.15),
        posterior_sampler=Langevin(10, 0.1),
        test_data_sampler=Langevin(60, 0.15),
        energy_lr=3e-3,
        decoder_lr=3e-3,
        encoder_lr=3e-3,
        decoder_weight_decay=0.0,
        encoder_weight_decay=0.0,
        sample_weight=1.0,
        divergence_limits={},
    )
    options.update(kwargs)
    return DualMCMC(
        GaussianDecoder(MLPGenerator(2, [2], hidden=64, out_activation=None), 0.3),
        EnergyMLP(2, hidden=64, activation="leaky_relu"),
        MLPEncoder([2], 2, hidden=64),
        **options,
    )


@pytest.mark.slow
def test_the_generator_initialised_chain_moves_to_a_known_density_and_the_generator_follows(tmp_path) -> None:
    """A fixed energy, U(x) = ||x - mu||^2 / (2 * 0.3^2), and a generator that starts elsewhere:
    the chain started at g(z) moves the samples to N(mu, 0.3^2 I), and the generator, taught by
    the revised samples alone (data term off), learns to put its samples where they are."""

    class FixedGaussianEnergy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mu = nn.Parameter(torch.tensor([2.0, -1.0]), requires_grad=False)
            self.unused = nn.Parameter(torch.zeros(1))  # an optimiser needs a parameter

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x - self.mu).square().sum(1) / (2 * 0.3**2) + 0 * self.unused

    torch.manual_seed(0)
    model = toy_model(data_weight=0.0, energy_lr=0.0, data_sampler=Langevin(100, 0.1))
    model.energy_net = FixedGaussianEnergy()
    mu = model.energy_net.mu.detach()

    z = torch.randn(2000, 2, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        raw = model.decoder.decode(z)
    revised = model.revise(raw, generator=torch.Generator().manual_seed(3))
    assert (raw.mean(0) - mu).norm() > 1.5
    assert (revised.mean(0) - mu).norm() < 0.05
    assert revised.std(0) == pytest.approx(torch.tensor([0.3, 0.3]), rel=0.1)

    fit(model, DataLoader(TensorDataset(mixture(2000, seed=1)), batch_size=200, shuffle=True), tmp_path, max_epochs=20)
    with torch.no_grad():
        taught = model.decoder.decode(z)
    # (a chain that mixes fully forgets its start, so g(z) regresses to the revisions' mean)
    assert (taught.mean(0) - mu).norm() < 0.25
    assert (raw.mean(0) - mu).norm() > 5 * (taught.mean(0) - mu).norm()


@pytest.mark.slow
def test_on_a_2d_mixture_the_ebm_and_its_revisions_beat_the_raw_generator(tmp_path: Path) -> None:
    """Four well-separated modes: a continuous generator of a Gaussian latent leaves mass between
    them; the EBM's density exp(-E) (normalised on a grid) and the samples its chain revises match
    the mixture measurably better in total variation than the raw generator samples."""
    torch.manual_seed(0)
    model = toy_model()
    fit(model, DataLoader(TensorDataset(mixture(4000, seed=1)), batch_size=200, shuffle=True), tmp_path, max_epochs=30)
    model.eval()
    raw = model.generate(20000, revise=False, generator=torch.Generator().manual_seed(3))
    revised = model.generate(20000, generator=torch.Generator().manual_seed(3))
    target = histogram(mixture(200000, seed=5))
    centres = (EDGES[:-1] + EDGES[1:]) / 2
    grid = torch.stack(torch.meshgrid(centres, centres, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        ebm_density = torch.softmax(-model.energy_net(grid) / model.temperature, 0).view(30, 30)
    tv_raw, tv_revised, tv_ebm = (total_variation(p, target) for p in (histogram(raw), histogram(revised), ebm_density))
    assert tv_revised < 0.5 * tv_raw, (tv_revised, tv_raw)
    assert tv_ebm < tv_raw - 0.05, (tv_ebm, tv_raw)
    assert not math.isnan(tv_ebm)
