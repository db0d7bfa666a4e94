"""Losses: small functions that turn samples into the quantities an optimiser descends."""

from lebm.estimators.mle import ContrastiveLoss, mle_loss
from lebm.estimators.reconstruction import Decoder, reconstruction_loss

__all__ = ["ContrastiveLoss", "Decoder", "mle_loss", "reconstruction_loss"]
