"""The run-wide switch for whole-chain capture: the one place that says whether chains are captured.

Samplers read it at every call (``Sampler.capture_allowed``); nothing writes their attributes. It
is on by default, so chains on a CUDA device are captured unless a run turns it off, either with
the ``ChainCapture`` callback in a recipe (``recipes/speed/eager_chains.yaml``) or in Python::

    from lebm.recording import chain_capture

    with chain_capture(False):
        model.generate(64)          # every chain eager

A single sampler (or chain initializer) can still be kept out of capture by its own
``cuda_graph=False`` (a chain that cannot be captured); it can never turn capture on when the run
has it off. What may be captured at all is declared per class (:class:`CaptureOptIn`).

The setting travels to processes started after it is set (``lebm_ddp_spawn``'s ranks, the
processes ``lebm_ddp`` launches) in the environment variable ``LEBM_CHAIN_CAPTURE`` (``0`` or
``1``), which is also how a shell turns capture off for a whole command:
``LEBM_CHAIN_CAPTURE=0 lebm fit -c ...``.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from typing import Any, ClassVar

#: The environment variable that carries the switch to child processes (and sets it from a shell).
ENVIRONMENT_VARIABLE = "LEBM_CHAIN_CAPTURE"
#: The values a switch's environment variable reads as on, and as off (any case).
ON_VALUES, OFF_VALUES = ("1", "true", "on", "yes"), ("0", "false", "off", "no")


def switch_from_environment(name: str, default: bool) -> bool:
    """The setting the environment variable ``name`` gives a switch: on for :data:`ON_VALUES`, off
    for :data:`OFF_VALUES`, ``default`` when unset or empty; any other value keeps ``default`` and
    says so in one line (a typo never turns a switch over in silence)."""
    value = os.environ.get(name, "")
    word = value.strip().lower()
    if not word:
        return default
    if word in ON_VALUES or word in OFF_VALUES:
        return word in ON_VALUES
    setting = "on" if default else "off"
    warnings.warn(
        f"{name}={value!r} is neither on ({', '.join(ON_VALUES)}) nor off ({', '.join(OFF_VALUES)}): "
        f"lebm keeps its default, {setting}",
        stacklevel=2,
    )
    return default


_enabled = switch_from_environment(ENVIRONMENT_VARIABLE, True)


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


class CaptureOptIn:
    """The opt-in to capture that samplers and chain initializers share: a class states
    ``capturable = True`` once the method it records (``recorded_methods``) meets the conditions in
    ``docs/extending.md`` ("Captured chains"); a subclass that overrides one of those methods does
    not inherit the opt-in (it states ``capturable = True`` itself); an instance's ``cuda_graph =
    False`` keeps it out; the run-wide switch (:func:`chain_capture_enabled`) has the last word."""

    #: Whether the recorded method may be captured whole as a CUDA graph (see the class docstring).
    capturable: ClassVar[bool] = False
    #: False keeps this object's calls out of capture; True follows the run-wide switch.
    cuda_graph: bool = True
    #: The methods whose body a capture records: overriding one revokes an inherited opt-in.
    recorded_methods: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "capturable" not in cls.__dict__ and any(name in cls.__dict__ for name in cls.recorded_methods):
            cls.capturable = False  # a new body is not known to be capturable: it opts in itself

    def capture_allowed(self) -> bool:
        """Whether this object's calls may be captured: the run's switch is on, its class opted in
        and its own ``cuda_graph`` does not keep it out."""
        return bool(chain_capture_enabled() and self.opted_in())

    def opted_in(self) -> bool:
        """Whether this object may be recorded at all, whatever the run's switch: its class opted in
        and its own ``cuda_graph`` does not keep it out (a recorded training iteration asks this of
        every sampler it runs)."""
        return bool(type(self).capturable and self.cuda_graph)


#: The environment variable that carries the recorded-iteration switch to child processes.
ITERATION_VARIABLE = "LEBM_RECORDED_ITERATIONS"


def _iteration_setting_from_environment() -> bool | None:
    """The recorded-iteration switch as the environment sets it: True or False for an on or off word,
    None (each method's default) when unset, empty or anything else (said in one line)."""
    word = os.environ.get(ITERATION_VARIABLE, "").strip().lower()
    if word in ON_VALUES or word in OFF_VALUES:
        return word in ON_VALUES
    switch_from_environment(ITERATION_VARIABLE, False)  # says in one line that a typo keeps the default
    return None


_iterations: bool | None = _iteration_setting_from_environment()


def iteration_capture_setting() -> bool | None:
    """The run's own setting of recorded training iterations: True or False when a run set it
    (``LEBM_RECORDED_ITERATIONS``, ``lebm.speed.RecordedIterations``, :func:`iteration_capture`),
    None when it did not: each method then takes its own default (``recorded_iterations_by_default``,
    False for every lebm method: chains captured, the rest of the iteration eager)."""
    return _iterations


def iteration_capture_enabled(default: bool = False) -> bool:
    """Whether this process records whole training iterations (every net's update beside its chains)
    as CUDA graphs: the run's setting (:func:`iteration_capture_setting`), or ``default`` (a method's
    ``recorded_iterations_by_default``) where the run set none. Off by default: captured chains are
    lebm's CUDA default, measured as fast or faster for 3 of 4 methods and 3.3x faster on the
    quickstart on an H200 at 256fb1d (``benchmarks/results/lend-2026-11-28-256fb1d.md``), with no
    same-call record showing recorded iterations 5% faster for any method
    (``benchmarks/speed_defaults.py`` applies the rule); ``recipes/speed/recorded_iterations.yaml`` or
    ``LEBM_RECORDED_ITERATIONS=1`` turns recording on for a run. On a CPU training runs eagerly
    either way (``lebm.testing.capture`` emulates a recording). Only lebm's own methods are ever
    recorded (:mod:`lebm.recording.audit`)."""
    return default if _iterations is None else _iterations


def set_iteration_capture(enabled: bool | None) -> bool | None:
    """Turn recorded training iterations on or off for this process and the processes it starts
    from now on (None: back to each method's default); returns the old setting."""
    global _iterations
    previous, _iterations = _iterations, None if enabled is None else bool(enabled)
    if _iterations is None:
        os.environ.pop(ITERATION_VARIABLE, None)
    else:
        os.environ[ITERATION_VARIABLE] = "1" if _iterations else "0"
    return previous


@contextlib.contextmanager
def iteration_capture(enabled: bool | None) -> Iterator[None]:
    """``set_iteration_capture(enabled)`` inside the block, the previous setting restored after it::

    with iteration_capture(True):
        trainer.fit(model, datamodule)   # on a GPU: each of lebm's own iterations replayed as one graph
    """
    previous = set_iteration_capture(enabled)
    try:
        yield
    finally:
        set_iteration_capture(previous)
