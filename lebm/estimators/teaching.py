"""Dual-MCMC teaching (Cui & Han, NeurIPS 2023; the official ``train.py``): the MCMC-revised
samples and latents teach the generator and the inference network."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from torch import Tensor

from lebm.estimators.types import Posterior


class TeachingLoss(NamedTuple):
    """``loss`` (scalar) and its detached unweighted terms ``data_term``, ``sample_term``."""

    loss: Tensor
    data_term: Tensor
    sample_term: Tensor


def inference_teaching_loss(
    q_data: Posterior,
    z_revised: Tensor,
    q_samples: Posterior,
    z_prior: Tensor,
    data_weight: float = 1.0,
    sample_weight: float = 0.1,
) -> TeachingLoss:
    """The inference network's loss: learn to predict the MCMC-revised latents::

        errI = data_weight   * mean_i -log q(z~_i | x_i)        z~: posterior Langevin from q(.|x) on real data
             + sample_weight * mean_i -log q(z_i  | x~_i)       x~: EBM-revised generator samples g(z), z ~ N(0, I)

    (official ``Gfactor`` = ``data_weight``, ``Ifactor`` = 0.1 = ``sample_weight``). Descending it
    moves ``q(.|x)`` towards the revised latents of real data (the latent chain teaches the
    encoder) and ``q(.|x~)`` towards the latents that produced the EBM-revised samples. The
    targets are constants.

    Args:
        q_data: the encoder's posterior on real data ``x`` ``(B, D)``.
        z_revised: revised latents of ``x`` ``(B, D)``.
        q_samples: the encoder's posterior on the revised samples ``x~`` ``(B', D)``.
        z_prior: the prior latents ``x~`` came from ``(B', D)``.
        data_weight: the weight of the real-data term.
        sample_weight: the weight of the revised-sample term.
    """
    data_term = q_data.nll(z_revised.detach()).mean()
    sample_term = q_samples.nll(z_prior.detach()).mean()
    loss = data_weight * data_term + sample_weight * sample_term
    return TeachingLoss(loss, data_term.detach(), sample_term.detach())


ResidualFn = Callable[[Tensor, Tensor], Tensor]
"""``residual(x, z) -> (B,)``: the generator's per-example loss at observations ``x`` and latents
``z`` (a decoder's ``nll``, or ``squared_error`` for the official code's plain SSE)."""


def generator_teaching_loss(
    residual: ResidualFn,
    x: Tensor,
    z_revised: Tensor,
    x_revised: Tensor,
    z_prior: Tensor,
    data_weight: float = 1.0,
    sample_weight: float = 50.0,
) -> TeachingLoss:
    """The generator's loss: explain the data at their revised latents and the EBM-revised samples
    at the latents they came from::

        errG = data_weight   * mean_i residual(x_i,  z~_i)     z~: posterior Langevin from q(.|x) on real data
             + sample_weight * mean_i residual(x~_i, z_i)      x~: EBM Langevin from g(z_i), z ~ N(0, I)

    With ``residual = ||x - g(z)||^2`` (per example) this is the official
    ``Gfactor * errRecon + Sfactor * errSample`` (``Gfactor`` 1; ``Sfactor`` 50 on CIFAR-10, 70 on
    CelebA-64). Descending it pulls ``g(z~)`` towards the data (the latent chain teaches through
    its latents) and ``g(z)`` towards its own EBM-revised version ``x~`` (the data chain teaches
    the generator). Gradients reach the generator only: latents and revised samples are constants.

    Args:
        residual: ``(x, z) -> (B,)``, e.g. ``decoder.nll`` or ``decoder.squared_error``.
        x: observations ``(B, *x_shape)``.
        z_revised: their revised latents ``(B, D)``.
        x_revised: EBM-revised samples ``(B', *x_shape)``.
        z_prior: the prior latents ``x_revised`` started from ``(B', D)``.
        data_weight: the weight of the real-data term.
        sample_weight: the weight of the revised-sample term.
    """
    data_term = residual(x, z_revised.detach()).mean()
    sample_term = residual(x_revised.detach(), z_prior.detach()).mean()
    loss = data_weight * data_term + sample_weight * sample_term
    return TeachingLoss(loss, data_term.detach(), sample_term.detach())
