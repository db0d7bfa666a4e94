"""The variational bound (single-sample KL to a tilted prior) and the inference-teaching loss.

The bound is checked against closed forms: with the EBM switched off (a plain Gaussian prior) the
KL estimate averages to the KL of two Gaussians; with a linear tilt (the prior exp(w.z) N(0, I)
is N(w, I), normaliser exp(|w|^2/2)) it averages to KL(q || N(w, I)) minus that log-normaliser,
which fixes the sign of the EBM term.
"""

from __future__ import annotations

import torch
from torch import nn

from lebm.estimators import generator_teaching_loss, inference_teaching_loss, variational_loss
from lebm.models import GaussianPrior, TiltedGaussianPrior
from lebm.nets import DiagonalGaussian, GaussianDecoder

MEAN, LOGVAR = torch.tensor([0.5, -1.0]), torch.tensor([-0.5, 0.3])
W = torch.tensor([1.0, 2.0])


class LinearEnergy(nn.Module):
    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return -(z @ self.w)


def posterior(n: int) -> DiagonalGaussian:
    return DiagonalGaussian(MEAN.expand(n, -1), LOGVAR.expand(n, -1))


def closed_form_kl(prior_mean: torch.Tensor, prior_std: float) -> float:
    q = torch.distributions.Normal(MEAN, (0.5 * LOGVAR).exp())
    p = torch.distributions.Normal(prior_mean, torch.full_like(prior_mean, prior_std))
    return float(torch.distributions.kl_divergence(q, p).sum())


def zero_decoder() -> GaussianDecoder:
    net = nn.Linear(2, 2)
    nn.init.zeros_(net.weight)
    nn.init.zeros_(net.bias)
    return GaussianDecoder(net, sigma=1.0)


def test_with_the_ebm_off_the_kl_estimate_is_the_kl_of_two_gaussians() -> None:
    n = 200000
    q = posterior(n)
    z = q.rsample(torch.Generator().manual_seed(0))
    for sigma in (1.0, 2.0):
        bound = variational_loss(zero_decoder(), torch.zeros(n, 2), q, z, GaussianPrior(2, sigma=sigma))
        assert abs(float(bound.kl.mean()) - closed_form_kl(torch.zeros(2), sigma)) < 0.02


def test_the_ebm_term_enters_with_the_sign_of_an_energy() -> None:
    n = 200000
    q = posterior(n)
    z = q.rsample(torch.Generator().manual_seed(1))
    prior = TiltedGaussianPrior(2, LinearEnergy(W))
    bound = variational_loss(zero_decoder(), torch.zeros(n, 2), q, z, prior)
    log_normaliser = float(W.square().sum() / 2)  # log of the integral of exp(w.z) N(z; 0, I)
    assert abs(float(bound.kl.mean()) - (closed_form_kl(W, 1.0) - log_normaliser)) < 0.03


def test_the_nll_part_is_the_decoders_and_the_loss_their_mean_sum() -> None:
    decoder = GaussianDecoder(nn.Identity(), sigma=1.0)  # -log p(x|z) = ||x - z||^2 / 2 + const
    z = torch.tensor([[1.0, 2.0]])
    q = DiagonalGaussian(torch.zeros(1, 2), torch.zeros(1, 2))
    bound = variational_loss(decoder, torch.zeros(1, 2), q, z, GaussianPrior(2))
    assert torch.isclose(bound.nll, torch.tensor([2.5])).all()
    assert torch.isclose(bound.kl, torch.tensor([0.0]), atol=1e-6).all()  # q = p: log q(z) - log p(z) = 0 exactly
    assert torch.isclose(bound.loss, torch.tensor(2.5))


def test_descending_the_bound_moves_the_encoder_to_the_tilted_prior_through_the_sample() -> None:
    """With an uninformative likelihood the optimal q is the prior N(w, I): the gradient reaches the
    encoder's mean and log-variance through the reparameterised sample and the EBM term."""
    mean = torch.zeros(1, 2, requires_grad=True)
    logvar = torch.full((1, 2), -2.0, requires_grad=True)
    prior = TiltedGaussianPrior(2, LinearEnergy(W))
    opt = torch.optim.Adam([mean, logvar], lr=0.05)
    gen = torch.Generator().manual_seed(2)
    for _ in range(600):
        q = DiagonalGaussian(mean.expand(256, -1), logvar.expand(256, -1))
        loss = variational_loss(zero_decoder(), torch.zeros(256, 2), q, q.rsample(gen), prior).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.allclose(mean.detach(), W.view(1, 2), atol=0.1)
    assert torch.allclose(logvar.detach(), torch.zeros(1, 2), atol=0.15)


def test_teaching_loss_on_a_hand_checked_case() -> None:
    """q = N(0, 1), target 1: -log q = 1/2 + log(2 pi)/2; weights 1 and 0.1."""
    q = DiagonalGaussian(torch.zeros(1, 1), torch.zeros(1, 1))
    result = inference_teaching_loss(q, torch.ones(1, 1), q, torch.full((1, 1), 2.0))
    half_log_2pi = 0.5 * torch.log(torch.tensor(2 * torch.pi))
    assert torch.isclose(result.data_term, 0.5 + half_log_2pi)
    assert torch.isclose(result.sample_term, 2.0 + half_log_2pi)
    assert torch.isclose(result.loss, result.data_term + 0.1 * result.sample_term)


def test_descending_the_teaching_loss_moves_q_to_the_revised_latents() -> None:
    mean = torch.zeros(4, 2, requires_grad=True)
    logvar = torch.zeros(4, 2, requires_grad=True)
    targets = torch.randn(4, 2, requires_grad=True)
    opt = torch.optim.Adam([mean, logvar], lr=0.05)
    for _ in range(300):
        q = DiagonalGaussian(mean, logvar)
        loss = inference_teaching_loss(q, targets, q, targets).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.allclose(mean.detach(), targets.detach(), atol=0.05)
    assert targets.grad is None  # the revised latents are constants


# ------------------------------------------------------------------------ the generator's loss
class ShiftGenerator(nn.Module):
    """``g(z) = z + b``: a generator whose best shift is known."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.zeros(dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.b


def test_generator_teaching_loss_on_a_hand_checked_case() -> None:
    """g = identity: data term ||x - z~||^2 = 4, sample term ||x~ - z||^2 = 9; weights 1 and 50."""
    decoder = GaussianDecoder(ShiftGenerator(1), sigma=0.3)
    x, z_revised = torch.tensor([[3.0]]), torch.tensor([[1.0]])
    x_revised, z_prior = torch.tensor([[-1.0]]), torch.tensor([[2.0]])
    result = generator_teaching_loss(decoder.squared_error, x, z_revised, x_revised, z_prior)
    assert torch.isclose(result.data_term, torch.tensor(4.0))
    assert torch.isclose(result.sample_term, torch.tensor(9.0))
    assert torch.isclose(result.loss, torch.tensor(4.0 + 50 * 9.0))
    nll = generator_teaching_loss(decoder.nll, x, z_revised, x_revised, z_prior, sample_weight=1.0)
    assert torch.isclose(nll.loss, torch.tensor((4.0 + 9.0) / (2 * 0.09)))


def test_descending_the_generator_loss_follows_the_revised_samples_and_the_data() -> None:
    """With only the sample term the shift moves g(z) onto the revised samples x~ = z + 2; with only
    the data term it moves g(z~) onto the data x = z~ - 1. Latents and samples stay constants."""
    z = torch.randn(64, 2, requires_grad=True)
    x_revised = (z + 2.0).detach().requires_grad_(True)
    x = (z - 1.0).detach()
    for data_weight, sample_weight, expected in ((0.0, 1.0, 2.0), (1.0, 0.0, -1.0)):
        decoder = GaussianDecoder(ShiftGenerator(2), sigma=0.3)
        opt = torch.optim.Adam(decoder.parameters(), lr=0.05)
        for _ in range(300):
            loss = generator_teaching_loss(
                decoder.squared_error, x, z, x_revised, z, data_weight=data_weight, sample_weight=sample_weight
            ).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert torch.allclose(decoder.net.b.detach(), torch.full((2,), expected), atol=0.05)
    assert z.grad is None and x_revised.grad is None
