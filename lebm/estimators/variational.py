"""The variational bound with a single-sample KL to a (tilted) latent prior."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from lebm.estimators.types import Decoder, EnergyPrior, Posterior


class VariationalBound(NamedTuple):
    """``loss`` (scalar, the negative bound averaged over the batch) and its detached per-example
    parts ``nll`` ``(B,)`` and ``kl`` ``(B,)``."""

    loss: Tensor
    nll: Tensor
    kl: Tensor


def variational_loss(
    decoder: Decoder, x: Tensor, q: Posterior, z: Tensor, prior: EnergyPrior, kl_weight: float | Tensor = 1.0
) -> VariationalBound:
    """The negative evidence lower bound with a single-sample KL (Cui, Wu & Han, ICCV 2023, Eqs. 9-12)::

        -ELBO(x) = -log p(x|z) + KL(q(z|x) || p(z)),   KL ≈ log q(z|x) - log p(z)  at  z ~ q(z|x)
                 = nll(x, z) + log q(z|x) + U(z) + D/2 log(2 pi sigma^2)

    ``z`` must be a reparameterised sample of ``q`` (``q.rsample()``), so that the gradient reaches
    the encoder through it, also through the prior's energy (the ``-f(z_q)`` term of the official
    code). ``U`` is the prior's total energy; for a tilted prior ``-log p(z) = U(z) + log Z`` up to
    the tilt's normaliser ``log Z(alpha)``, which is constant in the decoder and the encoder and is
    dropped (so ``kl`` is exact for a plain Gaussian prior and shifted by ``log Z`` otherwise). With
    ``nll = SSE / (2 sigma^2)`` this is the official G+I loss with ``Gfactor = 1 / (2 sigma^2)``.

    The prior's parameters receive gradients as well; a method steps only the decoder's and the
    encoder's optimiser on this loss (and may freeze the prior while computing it).

    Args:
        decoder: the observation model, ``nll(x, z) -> (B,)``.
        x: observations ``(B, *x_shape)``.
        q: the encoder's posterior over ``(B, D)``.
        z: ``q.rsample()``, ``(B, D)``.
        prior: the latent prior (``energy``, ``reference_log_normalizer``).
        kl_weight: the KL term's weight ``w`` in ``loss = mean(nll + w KL)`` (1: the bound; below 1
            during a KL warm-up). ``nll`` and ``kl`` are returned unweighted.
    """
    nll = decoder.nll(x, z)
    kl = q.log_prob(z) + prior.energy(z) + prior.reference_log_normalizer
    return VariationalBound((nll + kl_weight * kl).mean(), nll.detach(), kl.detach())
