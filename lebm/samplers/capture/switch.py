"""The run-wide switch for whole-chain capture: the one place that says whether chains are captured.

Samplers read it at every call (``Sampler.capture_allowed``); nothing writes their attributes. It
is on by default, so chains on a CUDA device are captured unless a run turns it off, either with
the ``ChainCapture`` callback in a recipe (``recipes/speed/eager_chains.yaml``) or in Python::

    from lebm.samplers.capture import chain_capture

    with chain_capture(False):
        model.generate(64)          # every chain eager

A single sampler can still be kept out of capture by its own ``cuda_graph=False`` (a chain that
cannot be captured); it can never turn capture on when the run has it off.

The setting travels to processes started after it is set (``lebm_ddp_spawn``'s ranks, the
processes ``lebm_ddp`` launches) in the environment variable ``LEBM_CHAIN_CAPTURE`` (``0`` or
``1``), which is also how a shell turns capture off for a whole command:
``LEBM_CHAIN_CAPTURE=0 lebm fit -c ...``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

#: The environment variable that carries the switch to child processes (and sets it from a shell).
ENVIRONMENT_VARIABLE = "LEBM_CHAIN_CAPTURE"

_enabled = os.environ.get(ENVIRONMENT_VARIABLE, "1").strip().lower() not in ("0", "false", "off", "no")


def chain_capture_enabled() -> bool:
    """Whether this process captures chains (on CUDA devices; other devices run eagerly anyway)."""
    return _enabled


def set_chain_capture(enabled: bool) -> bool:
    """Turn whole-chain capture on or off for every sampler of this process and of the processes
    it starts from now on; returns the old value."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    os.environ[ENVIRONMENT_VARIABLE] = "1" if _enabled else "0"
    return previous


@contextlib.contextmanager
def chain_capture(enabled: bool) -> Iterator[None]:
    """``set_chain_capture(enabled)`` inside the block, the previous value restored after it."""
    previous = set_chain_capture(enabled)
    try:
        yield
    finally:
        set_chain_capture(previous)
