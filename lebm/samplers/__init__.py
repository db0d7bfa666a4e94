"""MCMC samplers: stateless maths over an energy function given at call time.

``base.py``: the ``Sampler`` contract; ``chain.py``: ``ChainTarget`` and ``chain_context``, what every
chain gets right; ``langevin.py``, ``persistent.py``: the samplers; ``capture/``: whole-chain CUDA graphs.
"""

from lebm.samplers.base import Sampler, SamplerOutput
from lebm.samplers.chain import (
    ChainTarget,
    EnergyFn,
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
