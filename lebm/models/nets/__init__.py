"""Plain ``nn.Module`` networks: generators, energies, observation models."""

from lebm.models.nets.decoders import GaussianDecoder
from lebm.models.nets.energy import EnergyMLP
from lebm.models.nets.generators import DCGANGenerator, MLPGenerator

__all__ = ["DCGANGenerator", "EnergyMLP", "GaussianDecoder", "MLPGenerator"]
