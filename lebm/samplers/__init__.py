"""MCMC samplers: stateless maths over an energy function given at call time."""

from lebm.samplers.base import (
    ChainTarget,
    EnergyFn,
    Sampler,
    SamplerOutput,
    chain_context,
    differentiable_recurrent_nets,
    frozen_parameters,
    modules_in_mode,
)
from lebm.samplers.langevin import Langevin
from lebm.samplers.persistent import PersistentChains

__all__ = [
    "ChainTarget",
    "EnergyFn",
    "Langevin",
    "PersistentChains",
    "Sampler",
    "SamplerOutput",
    "chain_context",
    "differentiable_recurrent_nets",
    "frozen_parameters",
    "modules_in_mode",
]
