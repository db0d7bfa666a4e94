"""Maximum-likelihood (contrastive) loss for an energy-based model."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from lebm.samplers.chain import EnergyFn


class ContrastiveLoss(NamedTuple):
    """``loss`` (scalar) and the detached batch means ``energy_pos``, ``energy_neg``."""

    loss: Tensor
    energy_pos: Tensor
    energy_neg: Tensor


def mle_loss(energy_fn: EnergyFn, z_pos: Tensor, z_neg: Tensor) -> ContrastiveLoss:
    """Contrastive MLE loss ``mean E(z_pos) - mean E(z_neg)``.

    With energies ``E = -f``, its gradient is the negative log-likelihood gradient
    ``-(E_pos[grad f] - E_neg[grad f])``: descending it lowers the energy (raises ``f``) of the
    positives (data, or posterior samples for a latent prior) and raises it on the negatives
    (model samples). Both sets are scored in one forward pass.

    Args:
        energy_fn: maps ``(B, *shape)`` to ``(B,)`` energies; gradients flow to its parameters.
        z_pos: positives ``(B_pos, *shape)``, treated as constants (detached).
        z_neg: negatives ``(B_neg, *shape)``, treated as constants (detached).
    """
    energies = energy_fn(torch.cat([z_pos.detach(), z_neg.detach()]))
    energy_pos, energy_neg = energies[: len(z_pos)].mean(), energies[len(z_pos) :].mean()
    return ContrastiveLoss(energy_pos - energy_neg, energy_pos.detach(), energy_neg.detach())
