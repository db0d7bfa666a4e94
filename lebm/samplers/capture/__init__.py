"""Whole-chain CUDA-graph capture, under the samplers: it imports no sampler.

- :mod:`.switch`: the run-wide switch (on by default) that every sampler reads;
- :mod:`.cache`: a sampler's captured chains, keyed, recorded once and replayed;
- :mod:`.keys`: what a captured chain depends on, and the reasons a chain runs eagerly;
- :mod:`.recorders`: one capture stream and one memory pool per device, graphs retired together;
- :mod:`.host_sync`: what a graph refuses (host synchronisations) in the last warm-up;
- :mod:`.op_replay`: the strict CPU replay that tests a captured chain without a GPU.
"""

from lebm.samplers.capture.cache import (
    CACHE_SIZE,
    CHURN_LIMIT,
    WARMUP_RUNS,
    CapturedChain,
    ChainGraphs,
    capture_stats,
    chain_graphs,
    emulate_on_cpu,
    run_captured,
    samplers_of,
    set_chain_capture,
)
from lebm.samplers.capture.recorders import CaptureBroken
from lebm.samplers.capture.switch import chain_capture, chain_capture_enabled

__all__ = [
    "CACHE_SIZE",
    "CHURN_LIMIT",
    "WARMUP_RUNS",
    "CaptureBroken",
    "CapturedChain",
    "ChainGraphs",
    "capture_stats",
    "chain_capture",
    "chain_capture_enabled",
    "chain_graphs",
    "emulate_on_cpu",
    "run_captured",
    "samplers_of",
    "set_chain_capture",
]
