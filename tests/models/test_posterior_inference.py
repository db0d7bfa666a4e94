"""Posterior inference = a start (noise, or an encoder's sample/mean) + an optional chain.

On a linear-Gaussian model with a linearly tilted prior the posterior is Gaussian and known in
closed form, so the chains of ``LatentVariableModel.infer`` can be checked statistically: the
posterior chain must include the likelihood, the prior's EBM tilt and the Gaussian reference
term, with LEBM's update rule. Dropping any of them moves the samples' mean or covariance.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lebm.models import LatentEBM, LatentVariableModel, TiltedGaussianPrior
from lebm.nets import DiagonalGaussian, GaussianDecoder, InferenceNetwork
from lebm.samplers import Langevin

A = torch.tensor([[1.0, 0.5], [0.0, 1.0], [0.5, -0.5]])  # x = A z + eps: 3-d data, 2-d latent
SIGMA = 0.7
TILT = torch.tensor([1.5, -1.0])  # E(z) = -TILT . z: the prior exp(-E) N(0, I) is N(TILT, I)
X = torch.tensor([0.8, -1.2, 0.4])
STEP = 0.15


class LinearEnergy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(TILT.clone())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return -(z @ self.w)


class FixedEncoder(InferenceNetwork):
    """q(z|x) = N(mean, 0.25 I) whatever x (a deliberately poor start)."""

    def __init__(self, mean: list[float]) -> None:
        super().__init__()
        self.mean = nn.Parameter(torch.tensor(mean))
        self.latent_dim = 2

    def forward(self, x: torch.Tensor) -> DiagonalGaussian:
        mean = self.mean.expand(x.shape[0], -1)
        return DiagonalGaussian(mean, torch.full_like(mean, torch.tensor(0.25).log().item()))


def linear_decoder() -> GaussianDecoder:
    net = nn.Linear(2, 3)
    with torch.no_grad():
        net.weight.copy_(A)
        net.bias.zero_()
    return GaussianDecoder(net, sigma=SIGMA)


def analytic_posterior() -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and the covariance that Langevin with step s (drift h = s^2/2, noise s) converges to:
    precision P = A^T A / sigma^2 + I, mean P^-1 (A^T x / sigma^2 + w), covariance (P (I - h P / 2))^-1."""
    precision = A.T @ A / SIGMA**2 + torch.eye(2)
    mean = torch.linalg.solve(precision, A.T @ X / SIGMA**2 + TILT)
    h = STEP**2 / 2
    covariance = torch.linalg.inv(precision @ (torch.eye(2) - h * precision / 2))
    return mean, covariance


def check_samples(z: torch.Tensor) -> None:
    mean, covariance = analytic_posterior()
    assert torch.allclose(z.mean(0), mean, atol=0.03), (z.mean(0), mean)
    assert torch.allclose(torch.cov(z.T), covariance, atol=0.03), (torch.cov(z.T), covariance)


def chains(n: int = 6000) -> torch.Tensor:
    return X.expand(n, -1).clone()


def test_noise_plus_langevin_samples_the_exact_posterior() -> None:
    """LatentEBM's posterior chain: likelihood + EBM tilt + analytic reference term, code-form update."""
    prior = TiltedGaussianPrior(2, LinearEnergy())
    model = LatentEBM(linear_decoder(), prior, posterior_sampler=Langevin(n_steps=500, step_size=STEP))
    z = model.infer(chains(), generator=torch.Generator().manual_seed(0))
    check_samples(z)


def test_the_posterior_energy_carries_the_tilt_and_the_chain_the_reference() -> None:
    """Without the tilt (or without the reference term) the samples are visibly elsewhere: the
    statistical test above would fail."""
    prior = TiltedGaussianPrior(2, LinearEnergy())
    model = LatentEBM(linear_decoder(), prior, posterior_sampler=Langevin(n_steps=500, step_size=STEP))
    untilted = Langevin(500, STEP)(
        model.posterior_energy(chains(), with_prior_tilt=False), torch.randn(6000, 2), reference_precision=1.0
    )
    no_reference = Langevin(500, STEP)(model.posterior_energy(chains()), torch.randn(6000, 2))
    mean, _ = analytic_posterior()
    assert (untilted.mean(0) - mean).norm() > 0.3
    assert (no_reference.mean(0) - mean).norm() > 0.3


def test_encoder_plus_langevin_reaches_the_same_posterior() -> None:
    """Dual-MCMC's setting: chains start from q(z|x) and Langevin corrects the start."""
    model = LatentVariableModel(
        linear_decoder(),
        TiltedGaussianPrior(2, LinearEnergy()),
        encoder=FixedEncoder([-2.0, 2.0]),
        posterior_sampler=Langevin(n_steps=500, step_size=STEP),
    )
    z = model.infer(chains(), start="sample", generator=torch.Generator().manual_seed(1))
    check_samples(z)
    start = model.infer(chains(), start="sample", refine=False, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(start.mean(0), torch.tensor([-2.0, 2.0]), atol=0.03)  # the start alone is far off
    assert torch.allclose(start.std(0), torch.full((2,), 0.5), atol=0.02)


def test_encoder_only_returns_the_encoders_latents() -> None:
    """The joint hierarchical method's setting: no chain, the encoder is the posterior."""
    model = LatentVariableModel(
        linear_decoder(), TiltedGaussianPrior(2, LinearEnergy()), encoder=FixedEncoder([0.3, -0.4])
    )
    assert torch.equal(model.infer(chains(5)), torch.tensor([[0.3, -0.4]]).expand(5, -1))  # the mean by default
    drawn = model.infer(chains(4000), start="sample", generator=torch.Generator().manual_seed(2))
    assert torch.allclose(drawn.std(0), torch.full((2,), 0.5), atol=0.03)


def test_inference_needs_an_encoder_or_a_chain() -> None:
    with pytest.raises(ValueError, match="encoder, a posterior_sampler, or both"):
        LatentVariableModel(linear_decoder(), TiltedGaussianPrior(2, LinearEnergy()))
    model = LatentEBM(linear_decoder(), TiltedGaussianPrior(2, LinearEnergy()))
    with pytest.raises(ValueError, match="needs an encoder"):
        model.infer(chains(3), start="mean")
