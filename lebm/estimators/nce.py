"""Noise-contrastive (logistic) density-ratio estimation."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from lebm.samplers.chain import EnergyFn


class LogisticLoss(NamedTuple):
    """``loss`` (scalar) and the detached batch-mean logits on positives and negatives."""

    loss: Tensor
    logit_pos: Tensor
    logit_neg: Tensor


def nce_loss(logit_fn: EnergyFn, z_pos: Tensor, z_neg: Tensor) -> LogisticLoss:
    """Logistic loss of a classifier telling positives ``z_pos ~ q`` from negatives ``z_neg ~ p``::

        L = -E_q[log sigmoid(h(z))] - E_p[log(1 - sigmoid(h(z)))]
          =  E_q[softplus(-h(z))]   + E_p[softplus(h(z))]

    written with softplus so that large logits neither overflow nor lose precision. With equal
    sample sizes its minimiser is the log density ratio ``h(z) = log q(z) - log p(z)``.

    Args:
        logit_fn: ``h``: ``(B, *shape) -> (B,)`` logits (log-ratio estimates).
        z_pos: samples of the numerator density ``(B_pos, *shape)`` (detached).
        z_neg: samples of the denominator density ``(B_neg, *shape)`` (detached).
    """
    logits = logit_fn(torch.cat([z_pos.detach(), z_neg.detach()]))
    logit_pos, logit_neg = logits[: len(z_pos)], logits[len(z_pos) :]
    loss = F.softplus(-logit_pos).mean() + F.softplus(logit_neg).mean()
    return LogisticLoss(loss, logit_pos.detach().mean(), logit_neg.detach().mean())
