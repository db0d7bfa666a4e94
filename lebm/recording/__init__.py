"""Everything that records GPU work as CUDA graphs and replays it, on one floor: below the samplers
and the methods, which reach it from above; it imports nothing of lebm's but the foundations.

Chains (each sampler's K steps as one graph):

- :mod:`.switch`: the process-wide switches: chain capture (on by default), which every sampler
  reads, and recorded training iterations (off by default: each method's default), which every method reads;
- :mod:`.cache`: a sampler's captured chains, keyed, recorded once and replayed;
- :mod:`.keys`: what a captured chain depends on, and the reasons a chain runs eagerly;
- :mod:`.recorders`: one capture stream and one memory pool per device, graphs retired together;
- :mod:`.host_sync`: what a graph refuses (host synchronisations) in the last warm-up.

Training iterations (every net's update beside its chains, as one graph):

- :mod:`.recorded_iteration`: recorded once per key and replayed (``IterationRecorder``);
- :mod:`.iteration_key`: the key, part by named part;
- :mod:`.key_stamp`: the key's description of the method's state, checked by identity at every iteration;
- :mod:`.audit`: which iterations a recording may replay (lebm's own audited classes, running lebm's,
  torch's and Lightning's code only) and the bindings of lebm's functions checked before each replay;
- :mod:`.code_reads`: what a user's code run inside a captured chain reads beyond what its key describes;
- :mod:`.host_reads`: what a recorded iteration may not read or change on the host;
- :mod:`.device_adam`: Adam steps that read nothing on the host.

And:

- :mod:`.torch_internals`: the one seam to torch's private names; no other module reads them;
- :mod:`.run_switches`: the switches as Lightning callbacks (``lebm.speed.ChainCapture``,
  ``lebm.speed.RecordedIterations`` in recipes).

This package's ``__init__`` imports the chain capture only (no Lightning), so a sampler built
without a Trainer stays plain torch. The CPU emulation that tests a recording without a GPU is
``lebm.testing.capture``.
"""

from lebm.recording.cache import (
    CACHE_SIZE,
    CHURN_LIMIT,
    WARMUP_RUNS,
    ChainGraphs,
    capture_stats,
    chain_graphs,
    run_captured,
    samplers_of,
)
from lebm.recording.recorders import CaptureBroken
from lebm.recording.switch import (
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
