"""Plain ``nn.Module`` networks: generators, energies, observation models, inference networks."""

from lebm.models.nets.decoders import GaussianDecoder
from lebm.models.nets.encoders import ConvEncoder, DiagonalGaussian, InferenceNetwork, LadderEncoder, MLPEncoder
from lebm.models.nets.energy import EnergyMLP
from lebm.models.nets.generators import DCGANGenerator, MLPGenerator
from lebm.models.nets.hierarchical import HierarchicalGenerator
from lebm.models.nets.resnets import SNGANGenerator, SNResNetEnergy
from lebm.models.nets.text import BiLSTMEncoder, CategoricalDecoder, LSTMTextGenerator
from lebm.models.nets.vlae import VLAEGenerator, VLAELadderEncoder

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
