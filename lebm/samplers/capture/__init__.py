"""Whole-chain CUDA-graph capture, under the samplers: it imports no sampler.

- :mod:`.switch`: the run-wide switches: chain capture (on by default), which every sampler reads,
  and recorded training iterations (on by default), which every method reads;
- :mod:`.cache`: a sampler's captured chains, keyed, recorded once and replayed;
- :mod:`.keys`: what a captured chain depends on, and the reasons a chain runs eagerly;
- :mod:`.recorders`: one capture stream and one memory pool per device, graphs retired together;
- :mod:`.host_sync`: what a graph refuses (host synchronisations) in the last warm-up.

The CPU emulation that tests a captured chain without a GPU is ``lebm.testing.capture``.
"""

from lebm.samplers.capture.cache import (
    CACHE_SIZE,
    CHURN_LIMIT,
    WARMUP_RUNS,
    ChainGraphs,
    capture_stats,
    chain_graphs,
    run_captured,
    samplers_of,
)
from lebm.samplers.capture.recorders import CaptureBroken
from lebm.samplers.capture.switch import (
    chain_capture,
    chain_capture_enabled,
    iteration_capture,
    iteration_capture_enabled,
    set_chain_capture,
    set_iteration_capture,
)

__all__ = [
    "CACHE_SIZE",
    "CHURN_LIMIT",
    "WARMUP_RUNS",
    "CaptureBroken",
    "ChainGraphs",
    "capture_stats",
    "chain_capture",
    "chain_capture_enabled",
    "chain_graphs",
    "iteration_capture",
    "iteration_capture_enabled",
    "run_captured",
    "samplers_of",
    "set_chain_capture",
    "set_iteration_capture",
]
