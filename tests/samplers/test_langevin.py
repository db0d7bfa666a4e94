"""Langevin on analytic targets: moments, mode occupancy, reproducibility and the chain contract."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lebm.samplers import Langevin


def gaussian_energy(mean: torch.Tensor, cov: torch.Tensor):
    precision = torch.linalg.inv(cov)

    def energy(z: torch.Tensor) -> torch.Tensor:
        d = z - mean
        return 0.5 * torch.einsum("bi,ij,bj->b", d, precision, d)

    return energy


def mixture_energy(means: torch.Tensor, weights: torch.Tensor, std: float):
    def energy(z: torch.Tensor) -> torch.Tensor:
        sq = (z[:, None, :] - means[None]).square().sum(-1)
        return -torch.logsumexp(torch.log(weights)[None] - sq / (2 * std**2), dim=1)

    return energy


def test_gaussian_target_moments() -> None:
    mean = torch.tensor([1.0, -2.0])
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.8]])
    sampler = Langevin(n_steps=400, step_size=0.3)
    gen = torch.Generator().manual_seed(1)
    z = sampler(gaussian_energy(mean, cov), torch.randn(5000, 2, generator=gen) * 2, generator=gen)
    assert torch.allclose(z.mean(0), mean, atol=0.05)
    assert torch.allclose(torch.cov(z.T), cov, atol=0.06)


def test_reference_precision_adds_an_analytic_gaussian_term() -> None:
    """U(z) = ||z - 1||^2 / 2 + 3 ||z||^2 / 2 is N(1/4, 1/4): the reference term is not in energy_fn."""
    sampler = Langevin(n_steps=600, step_size=0.1)
    z = sampler(lambda z: (z - 1).square().sum(1) / 2, torch.randn(8000, 2), reference_precision=3.0)
    h, precision = 0.1**2 / 2, 4.0
    ula_variance = 1 / (precision * (1 - h * precision / 2))  # exact stationary variance of the discretised chain
    assert torch.allclose(z.mean(0), torch.full((2,), 0.25), atol=0.015)
    assert torch.allclose(z.var(0), torch.full((2,), ula_variance), atol=0.015)
    _, stats = sampler(
        lambda z: 0 * z.sum(1), torch.full((5, 2), 2.0), reference_precision=3.0, return_diagnostics=True
    )
    assert torch.isclose(stats["energy"][0], torch.tensor(12.0)), "diagnostics report the total energy"


def test_gaussian_target_is_missed_without_noise() -> None:
    """Gradient descent (noise 0) collapses onto the mode: the covariance test above would fail."""
    cov = torch.eye(2)
    z = Langevin(n_steps=600, step_size=0.1, noise_std=0.0)(gaussian_energy(torch.zeros(2), cov), torch.randn(2000, 2))
    assert torch.cov(z.T).diag().max() < 0.05


def test_mixture_mode_occupancy() -> None:
    means = torch.tensor([[-1.2, 0.0], [1.2, 0.0]])
    weights = torch.tensor([0.7, 0.3])
    sampler = Langevin(n_steps=1500, step_size=0.2)
    gen = torch.Generator().manual_seed(2)
    z = sampler(mixture_energy(means, weights, 0.5), torch.randn(6000, 2, generator=gen), generator=gen)
    left = (z[:, 0] < 0).float().mean().item()
    # P(z_x < 0) for the mixture: 0.7 * Phi(1.2/0.5) + 0.3 * Phi(-1.2/0.5)
    phi = 0.5 * (1 + math.erf(2.4 / math.sqrt(2)))
    expected = 0.7 * phi + 0.3 * (1 - phi)
    assert abs(left - expected) < 0.03
    assert abs(z[:, 1].std().item() - 0.5) < 0.03


def test_seeded_runs_reproduce() -> None:
    energy = gaussian_energy(torch.zeros(3), torch.eye(3))
    z0 = torch.randn(64, 3)
    sampler = Langevin(n_steps=10, step_size=0.3)
    a = sampler(energy, z0, generator=torch.Generator().manual_seed(5))
    b = sampler(energy, z0, generator=torch.Generator().manual_seed(5))
    c = sampler(energy, z0, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_paper_form_is_code_form_with_step_squared_over_two() -> None:
    energy = gaussian_energy(torch.ones(2), torch.eye(2) * 0.5)
    z0 = torch.randn(32, 2)
    code = Langevin(n_steps=5, step_size=0.4)(energy, z0, generator=torch.Generator().manual_seed(0))
    paper = Langevin(n_steps=5, step_size=0.08, form="paper")(energy, z0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(code, paper, atol=1e-6)


def test_one_step_matches_the_update_rule() -> None:
    """z1 = z0 - (s^2/2) grad U(z0) + n * eps, with eps from the given generator."""
    z0 = torch.randn(16, 2)
    s, n = 0.3, 0.05
    z1 = Langevin(n_steps=1, step_size=s, noise_std=n)(
        lambda z: 2 * z.square().sum(1), z0, generator=torch.Generator().manual_seed(3)
    )
    eps = torch.randn(16, 2, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(z1, z0 - s**2 / 2 * 4 * z0 + n * eps, atol=1e-6)


class CountingEnergy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.calls = 0
        self.saw_trainable = False

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.saw_trainable |= self.scale.requires_grad
        return self.scale * z.square().sum(1) / 2


def test_one_autograd_call_per_step_with_frozen_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    energy = CountingEnergy()
    grads = []
    original = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: grads.append(1) or original(*a, **k))
    Langevin(n_steps=7, step_size=0.1)(energy, torch.randn(4, 2))
    assert energy.calls == 7 and len(grads) == 7
    assert not energy.saw_trainable, "parameters must be frozen inside the chain"
    assert energy.scale.requires_grad and energy.scale.grad is None


def test_freeze_argument_freezes_closure_modules() -> None:
    energy = CountingEnergy()
    Langevin(n_steps=3, step_size=0.1)(lambda z: energy(z), torch.randn(4, 2), freeze=[energy])
    assert not energy.saw_trainable and energy.scale.requires_grad


def test_runs_inside_inference_mode_and_no_grad() -> None:
    energy = gaussian_energy(torch.full((2,), 3.0), torch.eye(2))
    sampler = Langevin(n_steps=300, step_size=0.2)
    with torch.inference_mode():
        z = sampler(energy, torch.zeros(500, 2))
    with torch.no_grad():
        z2 = sampler(energy, torch.zeros(500, 2))
    assert torch.allclose(z.mean(0), torch.full((2,), 3.0), atol=0.15)
    assert torch.allclose(z2.mean(0), torch.full((2,), 3.0), atol=0.15)


def test_grad_clip_bounds_each_samples_step() -> None:
    steep = lambda z: 1000 * z.square().sum(1)  # noqa: E731
    z0 = torch.randn(10, 3) * 5
    s, clip = 0.2, 1.5
    z1 = Langevin(n_steps=1, step_size=s, noise_std=0.0, grad_clip=clip)(steep, z0)
    moved = (z1 - z0).norm(dim=1)
    assert torch.allclose(moved, torch.full((10,), s**2 / 2 * clip), atol=1e-5)


def test_diagnostics_track_energy_and_gradient_norm() -> None:
    energy = gaussian_energy(torch.zeros(2), torch.eye(2))
    z, stats = Langevin(n_steps=50, step_size=0.3, noise_std=0.0)(
        energy, torch.randn(100, 2) * 4, return_diagnostics=True
    )
    assert stats["energy"].shape == (50,) and stats["grad_norm"].shape == (50,)
    assert stats["energy"][-1] < stats["energy"][0] / 5
    assert torch.all(stats["grad_norm"][1:] <= stats["grad_norm"][:-1] + 1e-6)


@pytest.mark.parametrize("kwargs", [{"n_steps": -1}, {"step_size": 0.0}, {"form": "euler"}, {"grad_clip": 0.0}])
def test_invalid_hyperparameters_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="Langevin"):
        Langevin(**kwargs)


def test_a_step_size_whose_steps_round_away_in_float32_is_said_in_one_line(recwarn) -> None:
    """CPU. ``Langevin(50, 1e-40)`` leaves float32 states of order 1 where they started (its noise and
    drift round away): a warning says so; a recipe's step size says nothing."""
    sampler = Langevin(50, 1e-40)
    said = [str(w.message) for w in recwarn if "round away" in str(w.message)]
    assert len(said) == 1 and "step_size 1e-40 is below 1e-08" in said[0] and "returns its start" in said[0]
    z = torch.randn(4, 3)
    assert torch.equal(sampler(lambda states: states.square().sum(1) / 2, z.clone()), z)  # what it says
    recwarn.clear()
    Langevin(50, 0.1)
    assert not [w for w in recwarn if "round away" in str(w.message)]
