"""Dual-MCMC teaching of the inference network (Cui & Han, NeurIPS 2023, §3.2 and §3.4)."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from lebm.models.nets.encoders import DiagonalGaussian


class TeachingLoss(NamedTuple):
    """``loss`` (scalar) and its detached unweighted terms ``data_term``, ``sample_term``."""

    loss: Tensor
    data_term: Tensor
    sample_term: Tensor


def inference_teaching_loss(
    q_data: DiagonalGaussian,
    z_revised: Tensor,
    q_samples: DiagonalGaussian,
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
        data_weight, sample_weight: the two terms' weights.
    """
    data_term = q_data.nll(z_revised.detach()).mean()
    sample_term = q_samples.nll(z_prior.detach()).mean()
    loss = data_weight * data_term + sample_weight * sample_term
    return TeachingLoss(loss, data_term.detach(), sample_term.detach())
