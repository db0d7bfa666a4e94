"""The latent diffusion's schedule, kernels and ancestral sampler against closed forms (device: CPU).

The reverse step is checked against the posterior of the forward process computed here from the
joint Gaussian of ``(z_s, z_t)`` given ``z_0``, not from the formula the code uses; the sampler
against Gaussian targets, for which the exact noise prediction is known in closed form.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from lebm.samplers.diffusion import (
    LogSNRSchedule,
    ancestral_sample,
    diffuse,
    forward_diffuse,
    predicted_clean,
    reverse_moments,
)


def alpha_sigma_of(logsnr: Tensor) -> tuple[Tensor, Tensor]:
    """``alpha^2 = SNR / (1 + SNR)``, ``sigma^2 = 1 / (1 + SNR)`` with ``SNR = exp(lambda)``."""
    snr = logsnr.exp()
    return (snr / (1 + snr)).sqrt(), (1 / (1 + snr)).sqrt()


def gaussian_denoiser(schedule: LogSNRSchedule, mean: Tensor, std: float):
    """The exact noise prediction ``E[eps | z_t]`` for data ``N(mean, std^2 I)``: ``z_t`` is
    ``N(alpha mean, (alpha^2 std^2 + sigma^2) I)`` and ``E[eps | z_t] = sigma (z_t - alpha mean) / v``."""

    def denoise(z_t: Tensor, logsnr: Tensor) -> Tensor:
        alpha, sigma = (v[:, None] for v in schedule.alpha_sigma(logsnr))
        return sigma * (z_t - alpha * mean) / (alpha**2 * std**2 + sigma**2)

    return denoise


def test_the_forward_marginal_preserves_the_variance() -> None:
    logsnr = torch.linspace(-20, 20, 401, dtype=torch.float64)
    alpha, sigma = LogSNRSchedule.alpha_sigma(logsnr)
    assert torch.allclose(alpha**2 + sigma**2, torch.ones_like(logsnr), atol=1e-12)
    assert torch.allclose((alpha**2 / sigma**2).log(), logsnr, atol=1e-9)


def test_the_schedule_runs_from_logsnr_max_to_logsnr_min_through_the_official_values() -> None:
    schedule = LogSNRSchedule()
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    logsnr = schedule.logsnr(t)
    alpha, sigma = schedule.alpha_sigma(logsnr)
    assert logsnr[0].item() == pytest.approx(9.8, abs=1e-9)
    assert logsnr[2].item() == pytest.approx(-5.1, abs=1e-9)
    assert logsnr[1].item() == pytest.approx(0.14, abs=0.005)  # the table's values, to its rounding
    assert (alpha[1].item(), sigma[1].item()) == (pytest.approx(0.73, abs=0.005), pytest.approx(0.68, abs=0.005))
    assert (alpha[0].item(), sigma[0].item()) == (pytest.approx(1.0, abs=5e-4), pytest.approx(0.0074, abs=5e-5))
    assert (alpha[2].item(), sigma[2].item()) == (pytest.approx(0.078, abs=5e-4), pytest.approx(0.997, abs=5e-4))
    dense = schedule.logsnr(torch.linspace(0, 1, 1001, dtype=torch.float64))
    assert (dense.diff() < 0).all(), "lambda decreases from t = 0 to t = 1"


def test_the_exact_noise_gives_back_the_clean_latent() -> None:
    stream = torch.Generator().manual_seed(0)
    z0, eps = torch.randn(6, 3, generator=stream), torch.randn(6, 3, generator=stream)
    logsnr = torch.linspace(-5, 9, 6)
    alpha, sigma = alpha_sigma_of(logsnr)
    z_t = alpha[:, None] * z0 + sigma[:, None] * eps
    assert torch.allclose(diffuse(z0, logsnr, eps), z_t, atol=1e-6)
    assert torch.allclose(predicted_clean(z_t, eps, alpha, sigma), z0, atol=1e-4)


@pytest.mark.parametrize(("logsnr_t", "logsnr_s"), [(-5.1, -4.0), (0.14, 2.5), (6.0, 9.8), (-3.0, 8.0)])
def test_one_reverse_step_with_the_exact_noise_is_the_forward_posterior(logsnr_t: float, logsnr_s: float) -> None:
    """``q(z_s | z_t, z_0)`` from the joint Gaussian of ``(z_s, z_t)`` given ``z_0`` (per dimension)::

    z_s = a_s z_0 + s_s e_s,   z_t = (a_t / a_s) z_s + sqrt(s_t^2 - (a_t / a_s)^2 s_s^2) e'
    Cov(z_s, z_t) = (a_t / a_s) s_s^2,   Var z_s = s_s^2,   Var z_t = s_t^2
    mean = a_s z_0 + Cov / s_t^2 (z_t - a_t z_0),   var = s_s^2 - Cov^2 / s_t^2
    """
    stream = torch.Generator().manual_seed(1)
    z0, eps = torch.randn(5, 4, generator=stream, dtype=torch.float64), torch.randn(5, 4, generator=stream)
    lt, ls = torch.full((5,), logsnr_t, dtype=torch.float64), torch.full((5,), logsnr_s, dtype=torch.float64)
    (a_t, s_t), (a_s, s_s) = alpha_sigma_of(lt[:1]), alpha_sigma_of(ls[:1])
    z_t = a_t * z0 + s_t * eps.double()
    covariance = (a_t / a_s) * s_s**2
    true_mean = a_s * z0 + covariance / s_t**2 * (z_t - a_t * z0)
    true_var = s_s**2 - covariance**2 / s_t**2

    z0_hat = predicted_clean(z_t, eps.double(), a_t.expand(5), s_t.expand(5))  # from the exact noise
    mean, var = reverse_moments(z_t, z0_hat, lt, ls, variance="small")
    assert torch.allclose(mean, true_mean, atol=1e-10)
    assert torch.allclose(var, true_var.expand(5, 4), rtol=1e-9, atol=1e-15)
    mean_large, var_large = reverse_moments(z_t, z0_hat, lt, ls, variance="large")
    assert torch.allclose(mean_large, true_mean, atol=1e-10), "the variance choice leaves the mean alone"
    assert (var_large >= var).all(), "the large variance is an upper bound of the true one"


def test_the_small_variance_is_one_minus_r_times_sigma_s_squared_and_the_large_sigma_t_squared() -> None:
    lt, ls = torch.tensor([-2.0, 1.0, 5.0], dtype=torch.float64), torch.tensor([0.5, 4.0, 9.8], dtype=torch.float64)
    (_, s_t), (_, s_s) = alpha_sigma_of(lt), alpha_sigma_of(ls)
    r = (lt - ls).exp()
    z = torch.zeros(3, 2, dtype=torch.float64)
    assert torch.allclose(reverse_moments(z, z, lt, ls, "small")[1][:, 0], (1 - r) * s_s**2, rtol=1e-12)
    assert torch.allclose(reverse_moments(z, z, lt, ls, "large")[1][:, 0], (1 - r) * s_t**2, rtol=1e-12)


def test_a_sampler_step_is_the_reverse_kernel_of_the_predicted_clean_latent() -> None:
    """Two steps by hand from the pure functions and the same noise stream: the sampler's loop."""
    schedule = LogSNRSchedule()
    denoise = gaussian_denoiser(schedule, torch.tensor([0.5, -1.0]), 0.3)
    z_T = torch.randn(4, 2, generator=torch.Generator().manual_seed(2))
    got = ancestral_sample(denoise, z_T, schedule, 3, generator=torch.Generator().manual_seed(3))

    stream = torch.Generator().manual_seed(3)
    z = z_T
    for t, s in ((1.0, 0.5), (0.5, 0.0)):
        lt, ls = schedule.logsnr(torch.full((4,), t)), schedule.logsnr(torch.full((4,), s))
        alpha, sigma = schedule.alpha_sigma(lt)
        mean, var = reverse_moments(z, predicted_clean(z, denoise(z, lt), alpha, sigma), lt, ls, "large")
        z = mean + var.sqrt() * torch.randn(z.shape, generator=stream)
    lt = schedule.logsnr(torch.zeros(4))
    alpha, sigma = schedule.alpha_sigma(lt)
    assert torch.allclose(got, predicted_clean(z, denoise(z, lt), alpha, sigma), atol=1e-5)


@pytest.mark.parametrize("variance", ["large", "small"])
def test_ancestral_sampling_with_the_exact_denoiser_reaches_a_gaussian_target(variance: str) -> None:
    schedule = LogSNRSchedule()
    mean, std = torch.tensor([1.0, -0.5, 2.0]), 0.8
    stream = torch.Generator().manual_seed(4)
    z = ancestral_sample(
        gaussian_denoiser(schedule, mean, std),
        torch.randn(20000, 3, generator=stream),
        schedule,
        100,
        variance=variance,
        generator=stream,
    )
    assert torch.allclose(z.mean(0), mean, atol=0.03)
    assert torch.allclose(z.std(0), torch.full((3,), std), rtol=0.04)


def test_few_large_variance_steps_overdisperse_a_narrow_target() -> None:
    """Why the toy measures the amortizer with 100 steps: with the exact denoiser, 10 "large" steps
    leave a target of std 0.2 about a third too wide, 100 steps a few percent."""
    schedule = LogSNRSchedule()
    denoise = gaussian_denoiser(schedule, torch.zeros(2), 0.2)
    widths = {}
    for n_steps in (10, 100):
        stream = torch.Generator().manual_seed(5)
        z = ancestral_sample(denoise, torch.randn(20000, 2, generator=stream), schedule, n_steps, generator=stream)
        widths[n_steps] = z.std(0).mean().item() / 0.2
    assert widths[10] > 1.2
    assert widths[100] < 1.08


def test_sampling_without_noise_is_deterministic_and_narrower() -> None:
    schedule = LogSNRSchedule()
    denoise = gaussian_denoiser(schedule, torch.zeros(2), 1.0)
    z_T = torch.randn(5000, 2, generator=torch.Generator().manual_seed(6))
    quiet = ancestral_sample(denoise, z_T, schedule, 20, noise=False, generator=torch.Generator().manual_seed(7))
    again = ancestral_sample(denoise, z_T, schedule, 20, noise=False, generator=torch.Generator().manual_seed(8))
    assert torch.equal(quiet, again), "no noise is drawn"
    noisy = ancestral_sample(denoise, z_T, schedule, 20, generator=torch.Generator().manual_seed(7))
    assert not torch.equal(quiet, noisy)


def test_the_sampler_draws_only_from_its_generator() -> None:
    schedule = LogSNRSchedule()
    denoise = gaussian_denoiser(schedule, torch.zeros(2), 0.5)
    z_T = torch.randn(16, 2)

    def run(seed: int) -> Tensor:
        return ancestral_sample(denoise, z_T, schedule, 10, generator=torch.Generator().manual_seed(seed))

    state = torch.get_rng_state()
    first, same, other = run(0), run(0), run(1)
    assert torch.equal(torch.get_rng_state(), state), "the global stream is left alone"
    assert torch.equal(first, same)
    assert not torch.allclose(first, other)


def test_forward_diffuse_draws_u_then_eps_from_the_generator() -> None:
    schedule = LogSNRSchedule()
    z0 = torch.randn(8, 3)
    z_t, logsnr, eps = forward_diffuse(z0, schedule, generator=torch.Generator().manual_seed(9))
    stream = torch.Generator().manual_seed(9)
    u = torch.rand(8, generator=stream)
    assert torch.allclose(logsnr, schedule.logsnr(u))
    assert torch.equal(eps, torch.randn(8, 3, generator=stream))
    assert torch.allclose(z_t, diffuse(z0, logsnr, eps))


def test_bad_settings_are_refused_in_one_line() -> None:
    for kwargs, named in [
        ({"logsnr_min": 3.0, "logsnr_max": 3.0}, "logsnr_max"),
        ({"logsnr_min": float("nan")}, "logsnr_min"),
        ({"logsnr_max": 25.0}, "logsnr_max"),
        ({"logsnr_min": "-5"}, "logsnr_min"),
    ]:
        with pytest.raises(ValueError, match=named) as error:
            LogSNRSchedule(**kwargs)
        assert "\n" not in str(error.value)
    z = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="variance"):
        reverse_moments(z, z, torch.zeros(2), torch.ones(2), variance="medium")
    with pytest.raises(ValueError, match="n_steps"):
        ancestral_sample(lambda z, lam: z, z, LogSNRSchedule(), 1)
    assert math.isfinite(LogSNRSchedule(-20, 20).logsnr(torch.ones(1)).item())
