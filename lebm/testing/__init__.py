"""Tools for testing lebm's machinery without the hardware it targets (not part of the API).

- :mod:`.capture`: captured chains on a CPU (``emulate_on_cpu``), with a strict emulation of a
  CUDA graph's replay.
"""
