"""Speed: switches that change how fast a run goes, never what it computes (beyond rounding).

``FastNets`` (compile, channels-last), ``CPUThreads`` (the CPU thread count) and :mod:`.numerics`
(TF32 matmuls) live here. ``ChainCapture`` (whole-chain CUDA-graph capture) and ``RecordedIterations``
(whole training iterations of lebm's own methods recorded as CUDA graphs, off by default) live with
everything else that records graphs, in :mod:`lebm.recording.run_switches`; recipes name them here.
"""

from lebm.recording.run_switches import ChainCapture, RecordedIterations
from lebm.speed.fast_nets import FastNets, apply_fast_paths
from lebm.speed.threads import CPUThreads

__all__ = ["CPUThreads", "ChainCapture", "FastNets", "RecordedIterations", "apply_fast_paths"]
