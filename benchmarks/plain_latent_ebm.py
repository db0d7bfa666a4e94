"""Reference: one LEBM training iteration written the usual way, for speed comparisons.

This is how a one-off research script typically writes the algorithm (the training iteration of
the official ``train_svhn.py`` of Pang et al., NeurIPS 2020: both chains, then the generator and
EBM updates): parameters stay trainable during the chains and every energy term gets its own
``autograd.grad`` call per Langevin step. ``benchmarks/train_step.py --baseline`` times it next
to the toolkit's ``LatentEBM`` on the same networks and data shape.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class PlainLatentEBMStep:
    """``step(x)`` runs posterior chain, prior chain, generator update and EBM update."""

    def __init__(
        self,
        generator: nn.Module,
        energy: nn.Module,
        latent_dim: int,
        sigma: float = 0.3,
        prior_steps: int = 60,
        prior_step_size: float = 0.4,
        posterior_steps: int = 20,
        posterior_step_size: float = 0.1,
        generator_lr: float = 1e-4,
        energy_lr: float = 2e-5,
    ) -> None:
        self.generator, self.energy, self.latent_dim, self.sigma = generator, energy, latent_dim, sigma
        self.prior_steps, self.prior_step_size = prior_steps, prior_step_size
        self.posterior_steps, self.posterior_step_size = posterior_steps, posterior_step_size
        self.generator_opt = torch.optim.Adam(generator.parameters(), lr=generator_lr, betas=(0.5, 0.999))
        self.energy_opt = torch.optim.Adam(energy.parameters(), lr=energy_lr, betas=(0.5, 0.999))

    def sample_prior(self, n: int, device: torch.device) -> Tensor:
        s = self.prior_step_size
        z = torch.randn(n, self.latent_dim, device=device)
        for _ in range(self.prior_steps):
            z = z.detach().requires_grad_(True)
            grad_energy = torch.autograd.grad(self.energy(z).sum(), z)[0]
            z = z - 0.5 * s * s * (grad_energy + z) + s * torch.randn_like(z)
        return z.detach()

    def sample_posterior(self, x: Tensor) -> Tensor:
        s = self.posterior_step_size
        z = torch.randn(x.shape[0], self.latent_dim, device=x.device)
        for _ in range(self.posterior_steps):
            z = z.detach().requires_grad_(True)
            nll = ((self.generator(z) - x) ** 2).sum() / (2 * self.sigma**2)
            grad_nll = torch.autograd.grad(nll, z)[0]
            grad_energy = torch.autograd.grad(self.energy(z).sum(), z)[0]
            z = z - 0.5 * s * s * (grad_nll + grad_energy + z) + s * torch.randn_like(z)
        return z.detach()

    def step(self, x: Tensor) -> None:
        z_pos = self.sample_posterior(x)
        z_neg = self.sample_prior(x.shape[0], x.device)
        self.generator_opt.zero_grad()
        (((self.generator(z_pos) - x) ** 2).sum() / x.shape[0]).backward()
        self.generator_opt.step()
        self.energy_opt.zero_grad()
        (self.energy(z_pos).mean() - self.energy(z_neg).mean()).backward()
        self.energy_opt.step()
