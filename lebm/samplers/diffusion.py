"""The maths of a variance-preserving latent diffusion, as pure functions: the truncated-cosine logSNR
schedule, the forward kernel, the clean latent predicted from the noise and the reverse kernel, and
the ancestral sampler built from them.

This is the sampler of DAMC's amortizer (Yu et al., *Learning Energy-Based Prior Model with
Diffusion-Amortized MCMC*, NeurIPS 2023, arXiv 2310.03218; the official repository's
``workspace/src/diffusion_helper_func.py`` and the sampling loop of ``_netQ_U`` in
``workspace/src/diffusion_net.py``). Notation, per example::

    lambda = log SNR = log(alpha^2 / sigma^2),   alpha^2 = sigmoid(lambda),   sigma^2 = sigmoid(-lambda)
    z_t = alpha_t z_0 + sigma_t eps,             eps ~ N(0, I)              (forward kernel q(z_t | z_0))

Time runs from ``t = 0`` (``lambda_max``: almost clean) to ``t = 1`` (``lambda_min``: almost pure
noise). The network the sampler calls, ``denoise(z_t, logsnr) -> eps_hat``, predicts the noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from lebm import arguments

__all__ = [
    "DIFFUSION_VARIANCES",
    "LOGSNR_BOUND",
    "Denoiser",
    "LogSNRSchedule",
    "ancestral_sample",
    "ancestral_sample_on_grid",
    "diffuse",
    "forward_diffuse",
    "logsnr_grid",
    "predicted_clean",
    "reverse_moments",
]

#: A noise predictor ``denoise(z_t, logsnr) -> eps_hat``: ``(B, D), (B,) -> (B, D)``.
Denoiser = Callable[[Tensor, Tensor], Tensor]

#: The reverse kernel's variances: ``"large"`` ``(1 - r) sigma_t^2`` (the official default) or
#: ``"small"`` ``(1 - r) sigma_s^2`` (the true posterior's).
DIFFUSION_VARIANCES = ("large", "small")

#: The largest ``|logSNR|`` a schedule may reach: the official denoiser clamps its input to it.
LOGSNR_BOUND = 20.0


def _rows(value: Tensor | float, like: Tensor) -> Tensor | float:
    """A per-example ``(B,)`` tensor viewed as ``(B, 1, ...)`` to broadcast over ``like`` ``(B, ...)``;
    scalars and tensors of ``like``'s rank pass through."""
    if isinstance(value, Tensor) and value.dim() == 1 and like.dim() > 1:
        return value.reshape(value.shape[0], *([1] * (like.dim() - 1)))
    return value


class LogSNRSchedule:
    """The truncated cosine schedule of the log signal-to-noise ratio (the official
    ``logsnr_schedule_fn``)::

        lambda(t) = -2 log tan(a t + b),   b = arctan(exp(-lambda_max / 2)),
                                           a = arctan(exp(-lambda_min / 2)) - b

    so ``lambda(0) = lambda_max`` and ``lambda(1) = lambda_min``, decreasing in between.

    Args:
        logsnr_min: ``lambda(1)``, the noisiest end (official: -5.1).
        logsnr_max: ``lambda(0)``, the cleanest end (official: 9.8); above ``logsnr_min``. Both lie in
            ``[-20, 20]``, the range the official denoiser clamps its input to.
    """

    def __init__(self, logsnr_min: float = -5.1, logsnr_max: float = 9.8) -> None:
        bound = {"at_least": -LOGSNR_BOUND, "at_most": LOGSNR_BOUND, "why_at_most": "the denoiser's input range"}
        low = arguments.number("LogSNRSchedule", "logsnr_min", logsnr_min, **bound)
        high = arguments.number("LogSNRSchedule", "logsnr_max", logsnr_max, **bound)
        if not high > low:
            raise ValueError(f"LogSNRSchedule logsnr_max must be > logsnr_min={low:g}, got {high:g}")
        self.logsnr_min, self.logsnr_max = low, high
        self.b = math.atan(math.exp(-0.5 * high))
        self.a = math.atan(math.exp(-0.5 * low)) - self.b

    def logsnr(self, t: Tensor) -> Tensor:
        """``lambda(t) = -2 log tan(a t + b)`` of times ``t`` in ``[0, 1]`` (any shape; the same shape)."""
        return -2.0 * torch.log(torch.tan(self.a * t + self.b))

    @staticmethod
    def alpha_sigma(logsnr: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha, sigma) = (sqrt(sigmoid(lambda)), sqrt(sigmoid(-lambda)))`` of log-SNRs ``lambda``
        (any shape; two tensors of that shape), so that ``alpha^2 + sigma^2 = 1``."""
        return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()

    def __repr__(self) -> str:
        return f"LogSNRSchedule(logsnr_min={self.logsnr_min:g}, logsnr_max={self.logsnr_max:g})"


def diffuse(z0: Tensor, logsnr: Tensor, eps: Tensor) -> Tensor:
    """The forward kernel's draw ``z_t = alpha z_0 + sigma eps`` (official ``diffusion_forward``):
    ``z0`` ``(B, D)``, per-example log-SNRs ``logsnr`` ``(B,)``, noise ``eps`` ``(B, D)`` -> ``(B, D)``."""
    alpha, sigma = LogSNRSchedule.alpha_sigma(logsnr)
    return _rows(alpha, z0) * z0 + _rows(sigma, z0) * eps


def forward_diffuse(
    z0: Tensor, schedule: LogSNRSchedule, *, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """A draw of the forward process at a uniform random time, what the ε-prediction loss trains on::

        u ~ U(0, 1) (B,),   lambda = schedule.logsnr(u),   eps ~ N(0, I) (B, D),   z_t = alpha z_0 + sigma eps

    ``u`` then ``eps`` are drawn from ``generator``. Returns ``(z_t, logsnr, eps)``:
    ``(B, D), (B,), (B, D)``.
    """
    u = torch.rand(z0.shape[0], generator=generator, device=z0.device, dtype=z0.dtype)
    logsnr = schedule.logsnr(u)
    eps = torch.randn(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
    return diffuse(z0, logsnr, eps), logsnr, eps


def predicted_clean(z_t: Tensor, eps_hat: Tensor, alpha: Tensor | float, sigma: Tensor | float) -> Tensor:
    """The clean latent the predicted noise implies, ``z0_hat = (z_t - sigma eps_hat) / alpha`` (the
    official ``pred_x_from_eps``): ``z_t``, ``eps_hat`` ``(B, D)``; ``alpha``, ``sigma`` per example
    ``(B,)`` (or broadcastable) -> ``(B, D)``. No clipping, as in the official code."""
    return (z_t - _rows(sigma, z_t) * eps_hat) / _rows(alpha, z_t)


def reverse_moments(
    z_t: Tensor, z0_hat: Tensor, logsnr_t: Tensor, logsnr_s: Tensor, variance: str = "large"
) -> tuple[Tensor, Tensor]:
    """Mean and variance of the reverse step ``p(z_s | z_t)``, ``s < t``, given a clean estimate
    (the official ``diffusion_reverse``)::

        r    = exp(lambda_t - lambda_s)                          (= SNR_t / SNR_s < 1)
        mean = r (alpha_s / alpha_t) z_t + (1 - r) alpha_s z0_hat
        var  = (1 - r) sigma_t^2     ("large")   or   (1 - r) sigma_s^2     ("small")

    With ``z0_hat`` the true ``z_0``, ``mean`` and the ``"small"`` variance are those of the
    forward process's posterior ``q(z_s | z_t, z_0)``.

    Args:
        z_t: ``(B, D)``.
        z0_hat: ``(B, D)``.
        logsnr_t: ``lambda_t`` ``(B,)`` (or a scalar tensor).
        logsnr_s: ``lambda_s > lambda_t`` ``(B,)`` (or a scalar tensor).
        variance: ``"large"`` or ``"small"``.

    Returns:
        ``(mean, var)``, each ``(B, D)``.
    """
    variance = arguments.one_of("reverse_moments", "variance", variance, DIFFUSION_VARIANCES)
    of_z_t, of_z0, var = _reverse_coefficients(logsnr_t, logsnr_s, variance)
    mean = _rows(of_z_t, z_t) * z_t + _rows(of_z0, z_t) * z0_hat
    return mean, torch.broadcast_to(_rows(var, z_t), mean.shape)


def _reverse_coefficients(logsnr_t: Tensor, logsnr_s: Tensor, variance: str) -> tuple[Tensor, Tensor, Tensor]:
    """The reverse step's ``(r alpha_s / alpha_t, (1 - r) alpha_s, var)`` (shapes of the log-SNRs):
    its mean is ``r alpha_s / alpha_t z_t + (1 - r) alpha_s z0_hat``."""
    alpha_t, sigma_t = LogSNRSchedule.alpha_sigma(logsnr_t)
    alpha_s, sigma_s = LogSNRSchedule.alpha_sigma(logsnr_s)
    r = torch.exp(logsnr_t - logsnr_s)
    one_minus_r = -torch.expm1(logsnr_t - logsnr_s)  # 1 - r, exact when r is close to 1
    var = one_minus_r * (sigma_t if variance == "large" else sigma_s).square()
    return r * alpha_s / alpha_t, one_minus_r * alpha_s, var


def logsnr_grid(schedule: LogSNRSchedule, n_steps: int, like: Tensor) -> Tensor:
    """The ancestral sampler's log-SNRs ``lambda(t_i)``, ``t_i = i / (n-1)``, ``i = 0 .. n-1``: ``(n,)``
    on ``like``'s device and dtype (``lambda(t_0) = lambda_max``, the cleanest)."""
    n_steps = arguments.whole("logsnr_grid", "n_steps", n_steps, at_least=2)
    return schedule.logsnr(torch.linspace(0.0, 1.0, n_steps, device=like.device, dtype=like.dtype))


def ancestral_sample(
    denoise: Denoiser,
    z_T: Tensor,
    schedule: LogSNRSchedule,
    n_steps: int,
    *,
    variance: str = "large",
    noise: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Ancestral sampling from ``z_T`` ``(B, D)`` (the official ``_netQ_U.forward`` loop)::

        for i = n-1, ..., 0:   t = i / (n-1),   s = max(i-1, 0) / (n-1)
            eps_hat = denoise(z_t, lambda(t))                       lambda(t) per example (B,)
            z0_hat  = (z_t - sigma_t eps_hat) / alpha_t
            i = 0:  return z0_hat                                   (no noise on the last step)
            else:   z_s = mean + sqrt(var) * eps                    (reverse_moments; eps from generator,
                                                                     left out when noise=False)

    Runs with autograd as the caller has it (wrap it in ``torch.no_grad()`` to sample without it).
    ``denoise`` gets the schedule's log-SNRs as they are; a network that clamps them (the official
    one, to ``[-20, 20]``) does so itself. :func:`ancestral_sample_on_grid` is the same loop for a
    denoiser that precomputes what depends on the step alone.

    Args:
        denoise: ``(z_t (B, D), logsnr (B,)) -> eps_hat (B, D)``.
        z_T: the start ``(B, D)``, usually ``N(0, I)``.
        schedule: the log-SNR schedule.
        n_steps: ``n >= 2``, the number of network evaluations.
        variance: ``"large"`` (official) or ``"small"``, see :func:`reverse_moments`.
        noise: add the reverse kernel's noise (official: on); off gives the deterministic mean path.
        generator: the stream of the reverse kernel's noise.

    Returns:
        ``z0_hat`` of the last step, ``(B, D)``.
    """
    n_steps = arguments.whole("ancestral_sample", "n_steps", n_steps, at_least=2)
    logsnrs = logsnr_grid(schedule, n_steps, z_T)
    steps = [logsnr.expand(z_T.shape[0]) for logsnr in logsnrs.unbind()]
    return ancestral_sample_on_grid(
        lambda z, i: denoise(z, steps[i]), z_T, logsnrs, variance=variance, noise=noise, generator=generator
    )


def ancestral_sample_on_grid(
    denoise_at: Callable[[Tensor, int], Tensor],
    z_T: Tensor,
    logsnrs: Tensor,
    *,
    variance: str = "large",
    noise: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """:func:`ancestral_sample`'s loop on a grid of log-SNRs ``logsnrs`` ``(n,)`` (:func:`logsnr_grid`),
    the denoiser called with the step's index: ``denoise_at(z_t (B, D), i) -> eps_hat (B, D)`` at
    ``lambda = logsnrs[i]``, so that it can precompute what depends on the step alone (the time
    embedding, a context projection). Every step's coefficients are computed once, before the loop;
    a step is then one network call and one fused update, :func:`reverse_moments`' mean
    ``r (alpha_s / alpha_t) z_t + (1 - r) alpha_s z0_hat`` with ``z0_hat`` substituted::

        z_s = (alpha_s / alpha_t) z_t - (1 - r) (alpha_s sigma_t / alpha_t) eps_hat + sqrt(var) eps

    and the last, ``i = 0``, returns ``z0_hat = (z_t - sigma_0 eps_hat) / alpha_0``.
    """
    n_steps = arguments.whole("ancestral_sample", "n_steps", logsnrs.shape[0], at_least=2)
    variance = arguments.one_of("ancestral_sample", "variance", variance, DIFFUSION_VARIANCES)
    alphas, sigmas = LogSNRSchedule.alpha_sigma(logsnrs)
    _, of_z0, var = _reverse_coefficients(logsnrs[1:], logsnrs[:-1], variance)  # [i-1]: t_i -> t_{i-1}
    keep = (alphas[:-1] / alphas[1:]).unbind()
    against = (of_z0 * sigmas[1:] / alphas[1:]).unbind()
    spread = var.sqrt().unbind()
    z = z_T
    for i in range(n_steps - 1, 0, -1):
        z = keep[i - 1] * z - against[i - 1] * denoise_at(z, i)
        if noise:
            z = z + spread[i - 1] * torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
    return predicted_clean(z, denoise_at(z, 0), alphas[0], sigmas[0])
