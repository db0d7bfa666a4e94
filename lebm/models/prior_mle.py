"""The latent EBM prior's maximum-likelihood update, written once (``LatentEBM``,
``JointHierarchicalEBM``).

The prior is tilted, ``p(z) ∝ exp(-E(z)) N(0, sigma^2 I)``; its log-likelihood gradient at the
posterior samples is ``E_{z-~p}[grad E(z-)] - E_{z+~p(z|x)}[grad E(z+)]``. One update::

    z- = prior_chain(N(0, init_std^2 I) noise)          # prior_negatives: the prior's own sampler
    prior step:  descend  mean E(z+) - mean E(z-)       # prior_mle_step: mle_loss on the residual energy

``z+`` ``(B, latent_dim)`` are posterior samples (a chain's end, or ``q(z|x)``'s sample), detached.
A method decides when each half runs: LatentEBM draws ``z-`` before the decoder's update and steps
the prior after it; the joint hierarchical EBM runs both halves together, before or after G+I.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor

from lebm.estimators import mle_loss
from lebm.models.latent_generator import chain_logs
from lebm.models.priors import Prior


class SteppingMethod(Protocol):
    """What :func:`prior_mle_step` reads of a method: its prior and its one stepping path."""

    prior: Prior

    def step_optimizers(self, optimizers: Any, loss: Tensor, clip: float | None = None) -> None: ...


class PriorNegatives(NamedTuple):
    """The prior chain's samples ``z`` ``(n, latent_dim)``, its logs (``train/prior_chain_*``:
    first and last step) and the states the divergence guard watches (``train/prior_chain_states``)."""

    z: Tensor
    logs: dict[str, Tensor]
    watch: dict[str, Tensor]


def prior_negatives(prior: Prior, n: int, generator: torch.Generator | None) -> PriorNegatives:
    """``z- ~ p(z)``: ``n`` samples ``(n, latent_dim)`` of the prior's sampler, drawn from ``generator``."""
    z_neg, stats = prior.sample(n, generator=generator, return_diagnostics="ends")
    return PriorNegatives(z_neg, chain_logs("train/prior_chain", stats), {"train/prior_chain_states": z_neg})


def prior_mle_step(
    method: SteppingMethod, optimizer: Any, z_pos: Tensor, z_neg: Tensor, clip: float | None = None
) -> dict[str, Tensor]:
    """One step of ``optimizer`` (the prior's) on ``mean E(z_pos) - mean E(z_neg)``, ``E`` the
    prior's residual energy, ``z_pos`` ``(B, latent_dim)`` and ``z_neg`` ``(n, latent_dim)`` detached,
    through ``method.step_optimizers`` (max-norm ``clip`` when given). Returns the step's logs:
    ``train/prior_loss``, ``train/energy_pos``, ``train/energy_neg`` (detached batch means)."""
    contrastive = mle_loss(method.prior.residual_energy, z_pos, z_neg)
    method.step_optimizers(optimizer, contrastive.loss, clip=clip)
    return {
        "train/prior_loss": contrastive.loss.detach(),
        "train/energy_pos": contrastive.energy_pos,
        "train/energy_neg": contrastive.energy_neg,
    }


#: The names a prior learned by MLE adds to a method's logs: its chain (:func:`prior_negatives`)
#: and its step (:func:`prior_mle_step`).
PRIOR_MLE_METRIC_NAMES = ("train/prior_chain_*", "train/prior_loss", "train/energy_pos", "train/energy_neg")
