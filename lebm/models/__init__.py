"""The learning methods (LightningModules), their priors and networks."""

from lebm.models.base import LatentVariableModel
from lebm.models.latent_ebm import LatentEBM
from lebm.models.priors import GaussianPrior, Prior, TiltedGaussianPrior

__all__ = ["GaussianPrior", "LatentEBM", "LatentVariableModel", "Prior", "TiltedGaussianPrior"]
