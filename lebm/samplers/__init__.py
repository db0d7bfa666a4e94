"""MCMC samplers: stateless maths over an energy function given at call time."""

from lebm.samplers.base import EnergyFn, Sampler, frozen_parameters
from lebm.samplers.langevin import Langevin
from lebm.samplers.persistent import PersistentChains

__all__ = ["EnergyFn", "Langevin", "PersistentChains", "Sampler", "frozen_parameters"]
