"""The learning methods (LightningModules), their priors and networks."""

from lebm.models.base import LatentVariableModel
from lebm.models.latent_ebm import LatentEBM
from lebm.models.multistage_nce import MultiStageNCE
from lebm.models.priors import GaussianPrior, Prior, ProductOfRatiosPrior, TiltedGaussianPrior

__all__ = [
    "GaussianPrior",
    "LatentEBM",
    "LatentVariableModel",
    "MultiStageNCE",
    "Prior",
    "ProductOfRatiosPrior",
    "TiltedGaussianPrior",
]
