"""Plain ``nn.Module`` networks, no Lightning: generators, energies, observation models (``Decoder``),
inference networks, DAMC's latent diffusion amortizer and its condition encoders (its inner parts,
the denoiser and the null embedding, are in :mod:`lebm.nets.diffusion`), and the latent layout
(``LatentGroups``) they share."""

from lebm.nets.decoders import Decoder, GaussianDecoder
from lebm.nets.diffusion import ConvEmbedding, LatentDiffusionAmortizer, MLPEmbedding
from lebm.nets.encoders import ConvEncoder, DiagonalGaussian, InferenceNetwork, LadderEncoder, MLPEncoder
from lebm.nets.energy import EnergyMLP
from lebm.nets.generators import DCGANGenerator, MLPGenerator
from lebm.nets.hierarchical import HierarchicalGenerator
from lebm.nets.latents import LatentGroups
from lebm.nets.resnets import SNGANGenerator, SNResNetEnergy
from lebm.nets.text import BiLSTMEncoder, CategoricalDecoder, LSTMTextGenerator
from lebm.nets.vlae import VLAEGenerator, VLAELadderEncoder

__all__ = [
    "BiLSTMEncoder",
    "CategoricalDecoder",
    "ConvEmbedding",
    "ConvEncoder",
    "DCGANGenerator",
    "Decoder",
    "DiagonalGaussian",
    "EnergyMLP",
    "GaussianDecoder",
    "HierarchicalGenerator",
    "InferenceNetwork",
    "LSTMTextGenerator",
    "LadderEncoder",
    "LatentDiffusionAmortizer",
    "LatentGroups",
    "MLPEmbedding",
    "MLPEncoder",
    "MLPGenerator",
    "SNGANGenerator",
    "SNResNetEnergy",
    "VLAEGenerator",
    "VLAELadderEncoder",
]
