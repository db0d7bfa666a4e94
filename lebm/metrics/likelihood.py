"""Importance-sampled marginal likelihood ``log p(x) = log ∫ p(x|z) p(z) dz`` of a latent-variable model.

The estimate, per example, with ``K`` draws ``z_k ~ q(z|x)``::

    log p(x) ≈ log (1/K) sum_k exp(-nll(x|z_k) - U(z_k) - log q(z_k|x))  -  log Z_U

``U`` is the prior's unnormalised energy (:meth:`Prior.energy`, Gaussian reference included) and
``Z_U = ∫ exp(-U(z)) dz = (2 pi sigma^2)^{D/2} E_{N(0, sigma^2 I)}[exp(-E(z))]`` its normaliser,
the expectation estimated once by Monte Carlo over the Gaussian reference (exact, 1, for a plain
Gaussian prior). The first term is unbiased for ``p(x) Z_U`` and its log is biased low by about
half the squared relative standard error (Jensen); both errors are reported.

Proposals ``q(z|x)``:

- ``"posterior"``: a diagonal Gaussian fitted per example to ``posterior_samples`` runs of the
  model's posterior inference (LatentEBM: short-run Langevin from independent noise), its standard
  deviation widened by ``scale`` (and at least ``min_std``);
- ``"encoder"``: the inference network's ``q(z|x)`` (its standard deviation widened by ``scale``);
- ``"prior"``: the prior's Gaussian reference ``N(0, sigma^2 I)`` (unbiased, high variance).

A fraction ``prior_mixture`` of the proposal is the Gaussian reference (defensive importance
sampling): the weights then stay bounded by ``p(x|z) exp(-E(z)) / (prior_mixture Z_E)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from lebm.nets.encoders import DiagonalGaussian

Proposal = Literal["posterior", "encoder", "prior"]
PROPOSALS = ("posterior", "encoder", "prior")


@dataclass
class Estimate:
    """A Monte-Carlo estimate and its standard error (tensors of one shape)."""

    value: Tensor
    std_error: Tensor


def log_mean_exp(log_weights: Tensor) -> Estimate:
    """``log mean_k exp(log_weights[..., k])`` and its delta-method standard error
    ``std_k(w) / (sqrt(K) mean_k(w))``: ``(..., K) -> (...)``, computed in float64 without overflow."""
    log_weights = log_weights.double()
    k = log_weights.shape[-1]
    top = log_weights.max(-1, keepdim=True).values
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    scaled = torch.exp(log_weights - top)
    mean = scaled.mean(-1)
    value = top.squeeze(-1) + torch.log(mean)
    spread = scaled.std(-1) if k > 1 else torch.full_like(mean, float("inf"))
    return Estimate(value, spread / (math.sqrt(k) * mean))


def prior_log_normalizer(
    prior: Any, n_samples: int = 100_000, batch_size: int = 10_000, generator: torch.Generator | None = None
) -> Estimate:
    """``log Z_U = log ∫ exp(-U(z)) dz`` of a prior (scalars): the Gaussian reference's
    ``D/2 log(2 pi sigma^2)`` plus ``log E_{N(0, sigma^2 I)}[exp(-E(z))]`` over ``n_samples`` draws
    (0 and exact when the prior has no residual energy)."""
    device = prior.device
    reference = torch.tensor(prior.reference_log_normalizer, dtype=torch.float64, device=device)
    if prior.residual_energy(torch.zeros(1, prior.latent_dim, device=device)) is None:
        return Estimate(reference, torch.zeros((), dtype=torch.float64, device=device))
    if not prior.reference_precision:
        raise ValueError("the prior's normaliser is estimated over its Gaussian reference, but it has none")
    sigma = prior.reference_precision**-0.5
    negative_energies = []
    with torch.no_grad():
        for start in range(0, n_samples, batch_size):
            count = min(batch_size, n_samples - start)
            z = torch.randn(count, prior.latent_dim, device=device, generator=generator) * sigma
            negative_energies.append(-prior.residual_energy(z).double())
    tilt = log_mean_exp(torch.cat(negative_energies))
    return Estimate(reference + tilt.value, tilt.std_error)


def _reference(prior: Any, like: Tensor) -> DiagonalGaussian:
    sigma = prior.reference_precision**-0.5 if prior.reference_precision else 1.0
    return DiagonalGaussian(torch.zeros_like(like), torch.full_like(like, 2 * math.log(sigma)))


def fit_proposal(
    model: Any,
    x: Tensor,
    proposal: Proposal,
    *,
    posterior_samples: int = 10,
    scale: float = 1.5,
    min_std: float = 0.05,
    generator: torch.Generator | None = None,
    sampler: Any = None,
) -> DiagonalGaussian:
    """The proposal ``q(z|x)`` over ``(B, latent_dim)`` (see the module docstring); ``sampler``
    replaces the model's posterior chain for ``proposal="posterior"`` (e.g. ``lebm.samplers.MALA``)."""
    if proposal not in PROPOSALS:
        raise ValueError(f"proposal must be one of {PROPOSALS}, got {proposal!r}")
    prior = model.prior
    if proposal == "prior":
        return _reference(prior, torch.zeros(x.shape[0], prior.latent_dim, device=x.device))
    if proposal == "encoder":
        if getattr(model, "encoder", None) is None:
            raise ValueError(f"proposal='encoder' needs an inference network, but {type(model).__name__} has none")
        with torch.no_grad():
            q = model.encoder(x)
        std = (q.std.float() * scale).clamp(min=min_std)
        return DiagonalGaussian(q.mean.float(), 2 * std.log())
    if posterior_samples < 2:
        raise ValueError(
            f"proposal='posterior' fits a Gaussian to posterior samples: needs >= 2, got {posterior_samples}"
        )
    chain = {} if sampler is None else {"sampler": sampler}
    draws = torch.stack([model.infer(x, generator=generator, **chain).detach() for _ in range(posterior_samples)])
    std = (draws.std(0) * scale).clamp(min=min_std)
    return DiagonalGaussian(draws.mean(0), 2 * std.log())


def mixture_log_prob(q: DiagonalGaussian, reference: DiagonalGaussian, weight: float, z: Tensor) -> Tensor:
    """``log[(1 - weight) q(z) + weight reference(z)]`` for ``z`` ``(K, B, D)`` -> ``(K, B)``."""
    log_q = q.log_prob(z)
    if weight <= 0:
        return log_q
    log_ref = reference.log_prob(z)
    return torch.logaddexp(log_q + math.log1p(-weight), log_ref + math.log(weight))


def _draw(
    q: DiagonalGaussian, reference: DiagonalGaussian, weight: float, k: int, generator: torch.Generator | None
) -> Tensor:
    """``k`` draws per example from the mixture: ``(k, B, D)``."""
    shape = (k, *q.mean.shape)
    eps = torch.randn(shape, device=q.mean.device, generator=generator)
    z = q.mean + q.std * eps
    if weight > 0:
        pick = torch.rand(shape[:2], device=q.mean.device, generator=generator) < weight
        z = torch.where(pick.unsqueeze(-1), reference.mean + reference.std * eps, z)
    return z


def importance_sampled_log_likelihood(
    model: Any,
    x: Tensor,
    log_normalizer: Estimate,
    *,
    n_samples: int = 500,
    proposal: Proposal = "posterior",
    posterior_samples: int = 10,
    scale: float = 1.5,
    min_std: float = 0.05,
    prior_mixture: float = 0.1,
    chunk: int = 50,
    generator: torch.Generator | None = None,
    sampler: Any = None,
) -> Estimate:
    """``log p(x)`` per example ``(B,)`` with its standard error ``(B,)`` (module docstring).

    ``model`` needs ``decoder.nll(x, z)`` (a normalised ``-log p(x|z)``), ``prior.energy(z)``
    and, for ``proposal="posterior"``, ``infer(x, generator=..., sampler=...)`` (``sampler``: a posterior
    chain other than the model's, for the proposal's draws). The reported error combines
    the per-example importance-sampling error and that of ``log_normalizer`` (independent draws).
    """
    if n_samples < 2 or chunk < 1:
        raise ValueError(f"n_samples must be >= 2 and chunk >= 1, got {n_samples}, {chunk}")
    if not 0.0 <= prior_mixture < 1.0:
        raise ValueError(f"prior_mixture must be in [0, 1), got {prior_mixture}")
    q = fit_proposal(
        model,
        x,
        proposal,
        posterior_samples=posterior_samples,
        scale=scale,
        min_std=min_std,
        generator=generator,
        sampler=sampler,
    )
    reference = _reference(model.prior, q.mean)
    weight = 0.0 if proposal == "prior" else prior_mixture
    batch = x.shape[0]
    log_weights = []
    with torch.no_grad():
        for start in range(0, n_samples, chunk):
            k = min(chunk, n_samples - start)
            z = _draw(q, reference, weight, k, generator)
            flat = z.reshape(k * batch, -1)
            repeated = x.unsqueeze(0).expand(k, *x.shape).reshape(k * batch, *x.shape[1:])
            log_joint = -(model.decoder.nll(repeated, flat) + model.prior.energy(flat)).double().view(k, batch)
            log_weights.append(log_joint - mixture_log_prob(q, reference, weight, z).double())
    sampled = log_mean_exp(torch.cat(log_weights).transpose(0, 1))
    value = sampled.value - log_normalizer.value
    return Estimate(value, torch.sqrt(sampled.std_error.square() + log_normalizer.std_error.square()))
