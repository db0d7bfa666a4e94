"""Speed: switches that change how fast a run goes, never what it computes (beyond rounding).

``ChainCapture`` (the run's switch for whole-chain CUDA-graph capture), ``RecordedIterations`` (the
run's switch for whole training iterations recorded as CUDA graphs, on by default), ``FastNets`` (compile,
channels-last), ``CPUThreads`` (the CPU thread count) and :mod:`.numerics` (TF32 matmuls).
"""

from lebm.speed.chain_capture import ChainCapture
from lebm.speed.fast_nets import FastNets, apply_fast_paths
from lebm.speed.recorded_iterations import RecordedIterations
from lebm.speed.threads import CPUThreads

__all__ = ["CPUThreads", "ChainCapture", "FastNets", "RecordedIterations", "apply_fast_paths"]
