"""The learning methods (LightningModules), their base, priors and latent layouts."""

from lebm.models.base import Method
from lebm.models.damc import DAMC
from lebm.models.dual_mcmc import DualMCMC
from lebm.models.hierarchical import JointHierarchicalEBM
from lebm.models.latent_ebm import LatentEBM
from lebm.models.latent_generator import LatentGeneratorModel
from lebm.models.latent_variable import LatentVariableModel
from lebm.models.multistage_nce import MultiStageNCE
from lebm.models.priors import GaussianPrior, Prior, TiltedGaussianPrior
from lebm.models.stages import ProductOfRatiosPrior
from lebm.nets.latents import LatentGroups
from lebm.training.guard import DivergenceGuard, TrainingDiverged

__all__ = [
    "DAMC",
    "DivergenceGuard",
    "DualMCMC",
    "GaussianPrior",
    "JointHierarchicalEBM",
    "LatentEBM",
    "LatentGeneratorModel",
    "LatentGroups",
    "LatentVariableModel",
    "Method",
    "MultiStageNCE",
    "Prior",
    "ProductOfRatiosPrior",
    "TiltedGaussianPrior",
    "TrainingDiverged",
]
