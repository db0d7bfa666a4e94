"""Plain ``nn.Module`` networks, no Lightning: generators, energies, observation models (``Decoder``),
inference networks, and the latent layout (``LatentGroups``) they share."""

from lebm.nets.decoders import Decoder, GaussianDecoder
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
    "LatentGroups",
    "MLPEncoder",
    "MLPGenerator",
    "SNGANGenerator",
    "SNResNetEnergy",
    "VLAEGenerator",
    "VLAELadderEncoder",
]
