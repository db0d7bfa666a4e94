"""Losses: small functions that turn samples into the quantities an optimiser descends."""

from lebm.estimators.diffusion import denoising_loss
from lebm.estimators.mle import ContrastiveLoss, mle_loss
from lebm.estimators.nce import LogisticLoss, nce_loss
from lebm.estimators.reconstruction import reconstruction_loss
from lebm.estimators.teaching import TeachingLoss, generator_teaching_loss, inference_teaching_loss
from lebm.estimators.types import Decoder, EnergyPrior, Posterior
from lebm.estimators.variational import VariationalBound, variational_loss

__all__ = [
    "ContrastiveLoss",
    "Decoder",
    "EnergyPrior",
    "LogisticLoss",
    "Posterior",
    "TeachingLoss",
    "VariationalBound",
    "denoising_loss",
    "generator_teaching_loss",
    "inference_teaching_loss",
    "mle_loss",
    "nce_loss",
    "reconstruction_loss",
    "variational_loss",
]
