"""The ε-prediction loss against closed forms (device: CPU): zero for the exact denoiser of a point
mass, ``D/2`` in expectation for a denoiser that predicts nothing, and for a Gaussian target the
expected minimum ``D/2 E_u[alpha^2 c^2 / (alpha^2 c^2 + sigma^2)]`` over the uniform time ``u``."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from lebm.estimators import denoising_loss
from lebm.samplers.diffusion import LogSNRSchedule


def test_the_exact_denoiser_of_a_point_mass_has_zero_loss() -> None:
    """For data at one point ``z0``, ``eps = (z_t - alpha z0) / sigma`` exactly."""
    schedule = LogSNRSchedule()
    z0 = torch.tensor([0.7, -1.2, 0.3], dtype=torch.float64).expand(64, 3)

    def exact(z_t: Tensor, logsnr: Tensor) -> Tensor:
        alpha, sigma = (v[:, None] for v in schedule.alpha_sigma(logsnr))
        return (z_t - alpha * z0) / sigma

    loss = denoising_loss(exact, z0, schedule, generator=torch.Generator().manual_seed(0))
    assert loss.shape == (64,)
    assert loss.abs().max().item() < 1e-12


def test_predicting_no_noise_costs_half_the_dimension_on_average() -> None:
    """``1/2 ||eps||^2`` with ``eps ~ N(0, I_D)``: mean ``D/2``, standard deviation ``sqrt(D/2)`` per example."""
    z0 = torch.randn(40000, 4, generator=torch.Generator().manual_seed(1))
    loss = denoising_loss(lambda z_t, logsnr: torch.zeros_like(z_t), z0, LogSNRSchedule(), generator=None)
    assert loss.mean().item() == pytest.approx(2.0, abs=5 * (2.0 / 40000) ** 0.5)


def test_the_gaussian_optimum_matches_the_integral_over_the_uniform_time() -> None:
    """Data ``N(m, c^2 I)``: the best prediction ``E[eps | z_t]`` leaves ``Var(eps | z_t) = alpha^2 c^2 / v``
    per dimension (``v = alpha^2 c^2 + sigma^2``), so the expected loss is ``D/2`` times its mean
    over ``u ~ U(0, 1)``; a perturbed prediction does worse."""
    schedule = LogSNRSchedule()
    mean, c, dim = torch.tensor([1.0, -2.0]), 0.5, 2

    def optimum(z_t: Tensor, logsnr: Tensor) -> Tensor:
        alpha, sigma = (v[:, None] for v in schedule.alpha_sigma(logsnr))
        return sigma * (z_t - alpha * mean) / (alpha**2 * c**2 + sigma**2)

    stream = torch.Generator().manual_seed(2)
    z0 = mean + c * torch.randn(200000, dim, generator=stream)
    loss = denoising_loss(optimum, z0, schedule, generator=torch.Generator().manual_seed(5))
    u = (torch.arange(100000, dtype=torch.float64) + 0.5) / 100000  # midpoint rule over the time
    alpha, sigma = schedule.alpha_sigma(schedule.logsnr(u))
    expected = dim / 2 * (alpha**2 * c**2 / (alpha**2 * c**2 + sigma**2)).mean().item()
    assert loss.mean().item() == pytest.approx(expected, rel=0.01)
    worse = denoising_loss(
        lambda z_t, logsnr: optimum(z_t, logsnr) + 0.1, z0, schedule, generator=torch.Generator().manual_seed(5)
    )
    assert (worse - loss).mean().item() == pytest.approx(dim / 2 * 0.1**2, abs=1e-3)  # the same u and eps


def test_draws_come_from_the_generator_and_gradients_reach_the_denoiser() -> None:
    schedule = LogSNRSchedule()
    net = nn.Linear(3, 3)
    z0 = torch.randn(16, 3)

    def denoise(z_t: Tensor, logsnr: Tensor) -> Tensor:
        return net(z_t) * logsnr[:, None]

    state = torch.get_rng_state()
    first = denoising_loss(denoise, z0, schedule, generator=torch.Generator().manual_seed(3))
    same = denoising_loss(denoise, z0, schedule, generator=torch.Generator().manual_seed(3))
    other = denoising_loss(denoise, z0, schedule, generator=torch.Generator().manual_seed(4))
    assert torch.equal(torch.get_rng_state(), state), "the global stream is left alone"
    assert torch.equal(first, same)
    assert not torch.allclose(first, other)
    first.mean().backward()
    assert net.weight.grad is not None and net.weight.grad.abs().sum() > 0
