"""The contrastive MLE loss: sign convention, and learning a tilted prior whose answer is known."""

from __future__ import annotations

import torch
from torch import nn

from lebm.estimators import mle_loss, reconstruction_loss
from lebm.models import TiltedGaussianPrior
from lebm.nets import GaussianDecoder
from lebm.samplers import Langevin


class LinearEnergy(nn.Module):
    """``E(z) = -w . z``: the tilted prior ``exp(w . z) N(0, I)`` is exactly ``N(w, I)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return -(z @ self.w)


def test_loss_is_positive_minus_negative_mean_energy() -> None:
    energy = lambda z: z.sum(1)  # noqa: E731
    z_pos, z_neg = torch.full((3, 2), 1.0), torch.full((5, 2), -2.0)
    result = mle_loss(energy, z_pos, z_neg)
    assert torch.isclose(result.loss, torch.tensor(2.0 - (-4.0)))
    assert torch.isclose(result.energy_pos, torch.tensor(2.0)) and torch.isclose(result.energy_neg, torch.tensor(-4.0))


def test_descending_the_loss_lowers_positive_energy_relative_to_negative() -> None:
    net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))
    energy = lambda z: net(z).squeeze(1)  # noqa: E731
    z_pos, z_neg = torch.randn(64, 2) + 2, torch.randn(64, 2) - 2
    gap_before = (energy(z_pos).mean() - energy(z_neg).mean()).item()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for _ in range(20):
        opt.zero_grad()
        mle_loss(energy, z_pos, z_neg).loss.backward()
        opt.step()
    assert (energy(z_pos).mean() - energy(z_neg).mean()).item() < gap_before - 0.5


def test_samples_are_constants() -> None:
    z_pos = torch.randn(4, 2, requires_grad=True)
    scale = torch.ones(2, requires_grad=True)
    mle_loss(lambda z: (scale * z).square().sum(1), z_pos, torch.randn(4, 2)).loss.backward()
    assert z_pos.grad is None and scale.grad is not None


def test_mle_with_langevin_negatives_moves_the_prior_onto_the_positives() -> None:
    """Positives ~ N(m, I); the tilted prior N(0, I) * exp(w . z) = N(w, I) must learn w = m."""
    target = torch.tensor([1.5, -1.0])
    prior = TiltedGaussianPrior(2, LinearEnergy(2), sampler=Langevin(n_steps=40, step_size=0.5))
    opt = torch.optim.Adam(prior.parameters(), lr=0.05)
    for _ in range(250):
        z_pos = target + torch.randn(200, 2)
        z_neg = prior.sample(200)
        opt.zero_grad()
        mle_loss(prior.residual_energy, z_pos, z_neg).loss.backward()
        opt.step()
    assert torch.allclose(prior.energy_net.w.detach(), target, atol=0.2)
    samples = prior.sample(4000)
    assert torch.allclose(samples.mean(0), target, atol=0.2)


def test_reconstruction_loss_on_a_hand_checked_case() -> None:
    """Identity generator, sigma 1: -log p(x|z) = ||x - z||^2 / 2, here (1 + 4) / 2 and (9 + 0) / 2."""
    decoder = GaussianDecoder(nn.Identity(), sigma=1.0)
    loss = reconstruction_loss(decoder, torch.zeros(2, 2), torch.tensor([[1.0, 2.0], [3.0, 0.0]]))
    assert torch.isclose(loss, torch.tensor((2.5 + 4.5) / 2))


def test_reconstruction_loss_trains_the_decoder_and_passes_gradients_to_latents_that_ask() -> None:
    """Descending it fits the decoder; a latent that requires grad (a reparameterised encoder
    sample in the variational bound) gets a gradient that moves g(z) towards x."""
    torch.manual_seed(0)
    decoder = GaussianDecoder(nn.Linear(3, 5), sigma=0.5)
    x, z = torch.randn(16, 5), torch.randn(16, 3, requires_grad=True)
    before = reconstruction_loss(decoder, x, z).item()
    opt = torch.optim.SGD([*decoder.parameters(), z], lr=0.02)
    for _ in range(50):
        opt.zero_grad()
        reconstruction_loss(decoder, x, z).backward()
        assert z.grad is not None and decoder.net.weight.grad is not None
        opt.step()
    assert reconstruction_loss(decoder, x, z).item() < 0.5 * before
    frozen_z = torch.randn(16, 3)  # chain samples are plain (detached) tensors: no gradient to them
    reconstruction_loss(decoder, x, frozen_z).backward()
    assert frozen_z.grad is None
