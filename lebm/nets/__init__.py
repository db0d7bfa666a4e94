"""Plain ``nn.Module`` networks: generators, energies, observation models, inference networks."""

from lebm.nets.decoders import GaussianDecoder
from lebm.nets.encoders import ConvEncoder, DiagonalGaussian, InferenceNetwork, LadderEncoder, MLPEncoder
from lebm.nets.energy import EnergyMLP
from lebm.nets.generators import DCGANGenerator, MLPGenerator
from lebm.nets.hierarchical import HierarchicalGenerator
from lebm.nets.resnets import SNGANGenerator, SNResNetEnergy
from lebm.nets.text import BiLSTMEncoder, CategoricalDecoder, LSTMTextGenerator
from lebm.nets.vlae import VLAEGenerator, VLAELadderEncoder

__all__ = [
    "BiLSTMEncoder",
    "CategoricalDecoder",
    "ConvEncoder",
    "DCGANGenerator",
    "DiagonalGaussian",
    "EnergyMLP",
    "GaussianDecoder",
    "HierarchicalGenerator",
    "InferenceNetwork",
    "LSTMTextGenerator",
    "LadderEncoder",
    "MLPEncoder",
    "MLPGenerator",
    "SNGANGenerator",
    "SNResNetEnergy",
    "VLAEGenerator",
    "VLAELadderEncoder",
]
