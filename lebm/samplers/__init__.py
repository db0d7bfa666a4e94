"""MCMC samplers: stateless maths over an energy function given at call time.

``base.py``: the ``Sampler`` contract; ``chain.py``: ``ChainTarget`` and ``chain_context``, what every
chain gets right; ``langevin.py`` (unadjusted), ``mala.py`` and ``hmc.py`` (Metropolis-adjusted, on
``metropolis.py``, with ``adaptation.py``'s step sizes), ``persistent.py``: the samplers;
``initializers.py``: where chains start (noise, a network, a learned sampler, an EMA copy).
Whole-chain CUDA graphs live one floor below, in :mod:`lebm.recording`.
"""

from lebm.samplers.adaptation import DualAveraging
from lebm.samplers.base import Sampler, SamplerOutput
from lebm.samplers.chain import (
    ChainTarget,
    EnergyFn,
    chain_context,
    differentiable_recurrent_nets,
    frozen_parameters,
    modules_in_mode,
)
from lebm.samplers.hmc import HMC
from lebm.samplers.initializers import AveragedStart, ChainInitializer, NetworkStart, NoiseStart
from lebm.samplers.langevin import Langevin
from lebm.samplers.mala import MALA
from lebm.samplers.metropolis import MetropolisSampler
from lebm.samplers.persistent import PersistentChains

__all__ = [
    "AveragedStart",
    "ChainInitializer",
    "ChainTarget",
    "DualAveraging",
    "EnergyFn",
    "HMC",
    "Langevin",
    "MALA",
    "MetropolisSampler",
    "NetworkStart",
    "NoiseStart",
    "PersistentChains",
    "Sampler",
    "SamplerOutput",
    "chain_context",
    "differentiable_recurrent_nets",
    "frozen_parameters",
    "modules_in_mode",
]
