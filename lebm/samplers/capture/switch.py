"""The run-wide switch for whole-chain capture: the one place that says whether chains are captured.

Samplers read it at every call (``Sampler.capture_allowed``); nothing writes their attributes. It
is on by default, so chains on a CUDA device are captured unless a run turns it off, either with
the ``ChainCapture`` callback in a recipe (``recipes/speed/eager_chains.yaml``) or in Python::

    from lebm.samplers.capture import chain_capture

    with chain_capture(False):
        model.generate(64)          # every chain eager

A single sampler can still be kept out of capture by its own ``cuda_graph=False`` (a chain that
cannot be captured); it can never turn capture on when the run has it off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

_enabled = True


def chain_capture_enabled() -> bool:
    """Whether this process captures chains (on CUDA devices; other devices run eagerly anyway)."""
    return _enabled


def set_chain_capture(enabled: bool) -> bool:
    """Turn whole-chain capture on or off for every sampler of this process; returns the old value."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    return previous


@contextlib.contextmanager
def chain_capture(enabled: bool) -> Iterator[None]:
    """``set_chain_capture(enabled)`` inside the block, the previous value restored after it."""
    previous = set_chain_capture(enabled)
    try:
        yield
    finally:
        set_chain_capture(previous)
