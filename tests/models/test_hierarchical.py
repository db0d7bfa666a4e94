"""JointHierarchicalEBM (Cui, Wu & Han, ICCV 2023): the bound, the EBM's sign, the chains, the user API.

The bound is checked against closed forms with the EBM switched off (a plain Gaussian prior: the
single-sample KL averages to the KL of two Gaussians) and with a frozen linear EBM, whose tilted
prior ``exp(w.z) N(0, I) = N(w, I)`` is where the encoder must go when the likelihood says nothing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lebm.models import GaussianPrior, JointHierarchicalEBM, TiltedGaussianPrior
from lebm.nets import DiagonalGaussian, EnergyMLP, GaussianDecoder, InferenceNetwork, MLPEncoder, MLPGenerator
from lebm.samplers import Langevin
from tests.helpers.trainers import quiet_trainer


class FreeGaussian(InferenceNetwork):
    """``q(z|x) = N(mean, exp(logvar))`` with learnable mean and log-variance, whatever ``x``."""

    def __init__(self, mean: list[float], logvar: list[float]) -> None:
        super().__init__()
        self.mean = nn.Parameter(torch.tensor(mean))
        self.logvar = nn.Parameter(torch.tensor(logvar))
        self.latent_dim = len(mean)

    def forward(self, x: torch.Tensor) -> DiagonalGaussian:
        n = x.shape[0]
        return DiagonalGaussian(self.mean.expand(n, -1), self.logvar.expand(n, -1))


class Silent(nn.Module):
    """A generator without parameters that ignores ``z``: the likelihood says nothing about it."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.zeros(z.shape[0], 2) + 0.0 * z[:, :1]


class Linear(nn.Module):
    """``E(z) = -w.z`` (``f = w.z``): the tilted prior ``exp(w.z) N(0, I)`` is ``N(w, I)``."""

    def __init__(self, w: list[float]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return -(z @ self.w)


class Quadratic(nn.Module):
    """``E(z) = a |z - m|^2 / 2``: with the N(0, I) reference the prior is ``N(a m / (1 + a), I / (1 + a))``."""

    def __init__(self, m: list[float], a: float) -> None:
        super().__init__()
        self.m, self.a = nn.Parameter(torch.tensor(m)), a

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.a * (z - self.m).square().sum(1) / 2


def fit(model: L.LightningModule, x: torch.Tensor, steps: int, tmp_path: Path, batch_size: int = 64) -> L.Trainer:
    """Train on ``x`` in order for ``steps`` training steps (iterations, each updating every net),
    or for one epoch with ``steps=-1``; the trainer that did it."""
    loader = DataLoader(TensorDataset(x), batch_size=batch_size, shuffle=False)
    trainer = quiet_trainer(
        max_steps=steps,
        max_epochs=1 if steps == -1 else -1,
        default_root_dir=str(tmp_path),
        accelerator="cpu",
        num_sanity_val_steps=0,
    )
    trainer.fit(model, loader)
    return trainer


def small_model(prior: Any = None, groups: list[int] | None = None, **kwargs: Any) -> JointHierarchicalEBM:
    groups = groups or [1, 2]
    dim = sum(groups)
    if prior is None:
        prior = TiltedGaussianPrior(dim, EnergyMLP(dim, hidden=16), sampler=Langevin(10, 0.3), groups=groups)
    decoder = GaussianDecoder(MLPGenerator(dim, [2], hidden=16, out_activation=None), sigma=0.5)
    return JointHierarchicalEBM(decoder, prior, MLPEncoder([2], dim, hidden=16), **kwargs)


# ------------------------------------------------------------------------------------ the bound
def test_with_the_ebm_off_the_bound_is_the_elbo_of_a_gaussian_prior() -> None:
    """GaussianPrior: nll is the decoder's, and the single-sample KL averages to KL(q || N(0, I))."""
    mean, logvar = [0.5, -1.0], [-0.5, 0.3]
    decoder = GaussianDecoder(Silent(), sigma=1.0)
    model = JointHierarchicalEBM(decoder, GaussianPrior(2), FreeGaussian(mean, logvar))
    x = torch.full((100000, 2), 2.0)
    bound = model.variational_bound(x, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(bound.nll, torch.full((100000,), 4.0))  # ||x - 0||^2 / 2
    q = torch.distributions.Normal(torch.tensor(mean), (0.5 * torch.tensor(logvar)).exp())
    exact = float(torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum())
    assert abs(float(bound.kl.mean()) - exact) < 0.02
    assert torch.isclose(bound.loss, (bound.nll + bound.kl).mean(), atol=1e-4)


def test_the_bound_gives_the_ebm_no_gradient_but_reaches_the_encoder_through_f() -> None:
    w = [1.0, 2.0]
    model = JointHierarchicalEBM(
        GaussianDecoder(Silent()), TiltedGaussianPrior(2, Linear(w)), FreeGaussian([0.0, 0.0], [0.0, 0.0])
    )
    model.variational_bound(torch.zeros(8, 2), generator=torch.Generator().manual_seed(0)).loss.backward()
    assert model.prior.energy_net.w.grad is None
    assert model.encoder.mean.grad is not None and model.prior.energy_net.w.requires_grad


def test_training_moves_the_encoder_to_the_tilted_prior(tmp_path: Path) -> None:
    """With a likelihood that says nothing and a frozen linear EBM (prior_lr 0), descending the bound
    takes q to the tilted prior N(w, I): mean w, log-variance 0. Without the -f(z+) term the mean
    would go to 0, with the EBM's sign flipped to -w."""
    w = [1.0, -2.0]
    prior = TiltedGaussianPrior(2, Linear(w), sampler=Langevin(2, 0.3))
    model = JointHierarchicalEBM(
        GaussianDecoder(Silent()),
        prior,
        FreeGaussian([0.0, 0.0], [-1.0, -1.0]),
        decoder_lr=0.05,
        prior_lr=0.0,
        betas=(0.5, 0.9),
        decoder_weight_decay=0.0,
    )
    fit(model, torch.zeros(512, 2), steps=200, tmp_path=tmp_path)
    assert torch.allclose(model.encoder.mean.detach(), torch.tensor(w), atol=0.25)
    assert torch.allclose(model.encoder.logvar.detach(), torch.zeros(2), atol=0.3)
    assert torch.equal(prior.energy_net.w.detach(), torch.tensor(w))  # the EBM did not move


# ------------------------------------------------------------------------------------ the EBM
def test_the_ebm_update_lowers_the_energy_where_the_encoder_puts_its_samples(tmp_path: Path) -> None:
    """Positives from q(z|x) concentrated at c, negatives from the prior chain: the EBM's energy
    drops at c against -c, and the prior's samples move towards c (the EBM loss's sign)."""
    c = [1.5, 1.5]
    torch.manual_seed(0)
    prior = TiltedGaussianPrior(2, EnergyMLP(2, hidden=32), sampler=Langevin(20, 0.3))
    model = JointHierarchicalEBM(
        GaussianDecoder(Silent()),
        prior,
        FreeGaussian(c, [-4.0, -4.0]),
        decoder_lr=0.0,
        prior_lr=5e-3,
        betas=(0.5, 0.9),
    )
    before = prior.sample(2000, generator=torch.Generator().manual_seed(1)).mean(0)
    fit(model, torch.zeros(2048, 2), steps=75, tmp_path=tmp_path)
    with torch.no_grad():
        energies = prior.energy(torch.tensor([c, [-x for x in c]]))
    assert energies[0] < energies[1] - 2.0
    after = prior.sample(2000, generator=torch.Generator().manual_seed(1)).mean(0)
    assert float(after @ torch.tensor(c)) > float(before @ torch.tensor(c)) + 1.0


def test_the_prior_chain_samples_a_fixed_ebm_and_lowers_its_energy() -> None:
    """A quadratic EBM gives the prior N(a m / (1 + a), I / (1 + a)): the chain from N(0, I) noise
    lowers the energy and reaches that mean and variance."""
    m, a = torch.tensor([2.0, -1.0, 0.5]), 3.0
    prior = TiltedGaussianPrior(3, Quadratic(m.tolist(), a), sampler=Langevin(200, 0.2), groups=[1, 2])
    model = small_model(prior=prior)
    z, stats = model.prior.sample(20000, generator=torch.Generator().manual_seed(0), return_diagnostics=True)
    assert stats["energy"][-1] < stats["energy"][0] - 1.0
    assert torch.allclose(z.mean(0), a * m / (1 + a), atol=0.05)
    assert torch.allclose(z.var(0), torch.full((3,), 1 / (1 + a)), atol=0.03)
    torch.manual_seed(0)
    assert model.generate(4).shape == (4, 2)


# ---------------------------------------------------------------------------- the user API
@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("layer", [0, 1, "z2"])
def test_sample_layer_varies_only_the_chosen_layer(layer: int | str, conditional: bool) -> None:
    model = small_model(groups=[1, 2, 2])
    images, latents = model.sample_layer(
        layer, 16, conditional=conditional, generator=torch.Generator().manual_seed(0), return_latents=True
    )
    assert images.shape == (16, 2) and latents.shape == (16, 5)
    varied = model.latent_groups.index(layer)
    for i, part in enumerate(model.latent_groups.split(latents)):
        if i == varied:
            assert part.std(0).min() > 0.1, "the chosen layer must vary across the samples"
        else:
            assert torch.equal(part, part[:1].expand_as(part)), f"layer {i} must stay fixed"
    assert images.std(0).max() > 0  # the decoded samples differ


def test_conditional_layer_samples_follow_the_conditional_of_the_joint_prior() -> None:
    """For the quadratic EBM the layers are independent given nothing; the conditional of the
    varied layer is N(a m_i / (1 + a), 1 / (1 + a)) whatever the fixed layers are."""
    m, a = torch.tensor([2.0, -1.0, 0.5]), 3.0
    prior = TiltedGaussianPrior(3, Quadratic(m.tolist(), a), sampler=Langevin(200, 0.2), groups=[1, 2])
    model = small_model(prior=prior)
    _, latents = model.sample_layer(
        1, 20000, conditional=True, generator=torch.Generator().manual_seed(0), return_latents=True
    )
    z2 = latents[:, 1:]
    assert torch.allclose(z2.mean(0), a * m[1:] / (1 + a), atol=0.05)
    assert torch.allclose(z2.var(0), torch.full((2,), 1 / (1 + a)), atol=0.03)


def test_infer_by_layer_splits_the_encoders_mean_bottom_first() -> None:
    model = small_model(groups=[1, 2])
    x = torch.randn(5, 2)
    z = model.infer(x)
    layers = model.infer(x, by_layer=True)
    assert [part.shape for part in layers] == [(5, 1), (5, 2)]
    assert torch.equal(torch.cat(layers, 1), z)
    assert torch.allclose(z, model.encoder(x).mean)  # the encoder's mean, no chain


def test_score_is_minus_log_joint_at_the_encoders_mean() -> None:
    model = small_model()
    x = torch.randn(5, 2)
    z = model.encoder(x).mean
    expected = model.decoder.nll(x, z) + model.prior.energy(z)
    assert torch.allclose(model.score(x), expected)


def test_the_vlae_baseline_has_no_ebm_step_and_samples_exactly(tmp_path: Path) -> None:
    model = small_model(prior=GaussianPrior(3))
    assert not model.learns_prior and len(model.configure_optimizers()[0]) == 1
    fit(model, torch.randn(64, 2), steps=2, tmp_path=tmp_path, batch_size=32)
    assert model.latent_groups.sizes == [3]  # no layout declared: one layer
    z = model.prior.sample(10000, generator=torch.Generator().manual_seed(0))
    assert abs(float(z.std()) - 1.0) < 0.02


@pytest.mark.parametrize("order", ["generator_first", "ebm_first"])
def test_update_order(order: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Official code: G+I, then the EBM; the paper's Algorithm 1: the EBM first."""
    model = small_model(update_order=order)
    stepped: list[str] = []
    original = model.step_optimizers

    def record(optimizers: Any, loss: torch.Tensor, clip: float | None = None) -> None:
        ebm = any(p is next(model.prior.parameters()) for g in optimizers.param_groups for p in g["params"])
        stepped.append("ebm" if ebm else "generator")
        original(optimizers, loss, clip)

    monkeypatch.setattr(model, "step_optimizers", record)
    fit(model, torch.randn(32, 2), steps=1, tmp_path=tmp_path, batch_size=32)
    assert stepped == (["generator", "ebm"] if order == "generator_first" else ["ebm", "generator"])


# ------------------------------------------------------------------------------------ checks
def test_group_layouts_must_agree() -> None:
    from lebm.nets import LadderEncoder

    prior = TiltedGaussianPrior(6, EnergyMLP(6, hidden=8), groups=[2, 2, 2])
    decoder = GaussianDecoder(MLPGenerator(6, [1, 8, 8], hidden=8))
    model = JointHierarchicalEBM(decoder, prior, LadderEncoder([3, 3], 1, 8, [4, 4]))
    with pytest.raises(
        ValueError, match=r"latent groups disagree: the prior .* \[2, 2, 2\] but the encoder .*\[3, 3\]"
    ):
        model.check_run()
    with pytest.raises(ValueError, match="update_order must be"):
        small_model(update_order="backwards")


# ------------------------------------------------------------------------ a known latent structure
CENTRES = torch.tensor([[-2.0, -1.0], [-2.0, 1.0], [2.0, -1.0], [2.0, 1.0]])


def two_level_mixture(n: int, seed: int) -> torch.Tensor:
    """A two-level mixture in 2-D: left/right (x = -2 | 2), then down/up (y = -1 | 1); std 0.1."""
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(0, 4, (n,), generator=generator)
    return CENTRES[index] + 0.1 * torch.randn(n, 2, generator=generator)


@torch.no_grad()
def log_normaliser(prior: Any) -> float:
    """``log Z`` of a 2-D tilted prior ``exp(-E(z)) N(0, I)`` by quadrature on a grid (0 for N(0, I))."""
    if not any(True for _ in prior.parameters()):
        return 0.0
    grid = torch.linspace(-7, 7, 281)
    z = torch.cartesian_prod(grid, grid)
    cell = float(grid[1] - grid[0]) ** 2
    return float(torch.logsumexp(-prior.energy(z), 0)) + math.log(cell) - math.log(2 * math.pi)


@torch.no_grad()
def heldout_elbo(model: JointHierarchicalEBM, x: torch.Tensor) -> float:
    """The mean ELBO ``log p(x) >= E_q[log p(x|z) + log p(z) - log q(z|x)]`` of held-out ``x``,
    normalised: the decoder's and the prior's constants (``log Z`` included) added back."""
    bound = model.variational_bound(x, generator=torch.Generator().manual_seed(0))
    decoder_constant = 0.5 * x.shape[1] * math.log(2 * math.pi * model.decoder.sigma**2)
    return float(-(bound.nll + bound.kl).mean()) - decoder_constant - log_normaliser(model.prior)


def toy_model(ebm: bool, seed: int) -> JointHierarchicalEBM:
    torch.manual_seed(seed)
    if ebm:
        energy = EnergyMLP(2, hidden=64, activation="leaky_relu", spectral_norm=True)
        prior = TiltedGaussianPrior(2, energy, sampler=Langevin(20, 0.3), groups=[1, 1])
    else:
        prior = GaussianPrior(2, groups=[1, 1])
    decoder = GaussianDecoder(MLPGenerator(2, [2], hidden=64, out_activation=None), sigma=0.1)
    encoder = MLPEncoder([2], 2, hidden=64)
    return JointHierarchicalEBM(
        decoder, prior, encoder, decoder_lr=1e-3, prior_lr=3e-3, decoder_weight_decay=0.0, lr_decay=1.0
    )


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_joint_ebm_prior_beats_the_same_model_without_it_on_a_two_level_mixture(
    seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four clusters, two per side, under two 1-d latent layers. The encoder maps them to four
    separated blobs; a N(0, I) prior (VLAE) must put mass between them (the prior-hole problem),
    while the joint EBM learns the aggregate posterior's shape. Criterion: the held-out ELBO, a lower
    bound on log-likelihood, with the EBM's log Z computed exactly on a grid (the latent is 2-D):
    it rewards a prior that matches where the encoder puts the data. Calibration (500 updates, batch
    100): the EBM gains 0.30 / 0.31 / 0.44 nats over the VLAE for seeds 0 / 1 / 2."""
    monkeypatch.setenv("PL_GLOBAL_SEED", str(seed))
    heldout = two_level_mixture(4000, 777)
    elbos = {}
    for ebm in (False, True):
        model = toy_model(ebm, seed)
        fit(model, two_level_mixture(50000, seed), steps=-1, tmp_path=tmp_path, batch_size=100)  # one epoch: 500
        elbos[ebm] = heldout_elbo(model, heldout)
    assert elbos[True] > elbos[False] + 0.15, elbos


# ------------------------------------------------------------------------------- KL warm-up
def test_the_kl_warm_up_weighs_the_kl_by_iterations_not_optimiser_steps(tmp_path: Path) -> None:
    """Device: CPU. With ``kl_warmup_steps = tau`` the first iteration's loss is the reconstruction
    term alone (weight 0), the weight after ``t`` iterations is ``1 - exp(-t / tau)`` with ``t``
    counting iterations (updates: two optimiser steps each while the EBM learns), the count is saved with the
    checkpoint, and the weights are those of a model without a warm-up (no new key)."""
    torch.manual_seed(0)
    x = torch.randn(64, 2)
    metrics = fit(small_model(kl_warmup_steps=4.0), x, steps=1, tmp_path=tmp_path).callback_metrics  # one iteration
    assert abs(float(metrics["train/kl"])) > 1e-3  # a KL that would show in the loss (1e-5 below)
    assert float(metrics["train/loss"]) == pytest.approx(float(metrics["train/nll"]), abs=1e-5)
    assert float(metrics["train/kl_weight"]) == 0.0

    model = small_model(kl_warmup_steps=4.0)
    trainer = fit(model, torch.randn(6 * 64, 2), steps=-1, tmp_path=tmp_path)  # 6 iterations
    assert int(model.kl_warmup_iterations) == 6
    assert float(model.kl_weight()) == pytest.approx(1 - math.exp(-6 / 4), abs=1e-6)
    trainer.save_checkpoint(tmp_path / "warm.ckpt")
    import lebm

    assert int(lebm.load(str(tmp_path / "warm.ckpt")).kl_warmup_iterations) == 6
    plain = small_model()  # no warm-up: the same weights, so either checkpoint loads into either model
    assert plain.state_dict().keys() == model.state_dict().keys() and plain.kl_weight() == 1.0
    with pytest.raises(ValueError, match="kl_warmup_steps must be a number >= 0"):
        small_model(kl_warmup_steps=-1)
