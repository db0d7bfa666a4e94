"""Whole-chain capture: a sampler's K steps recorded once as one CUDA graph and replayed.

At the papers' batch sizes a chain step on a GPU is a few small kernels each for the forward pass,
the backward pass to the state and the update, so a K-step chain is K x (dozens of launches plus
Python and autograd bookkeeping): launch-bound. Recording the whole chain once and replaying it
removes all of that. The graph reads

- the **state** from a static buffer that every call fills with its ``z0``,
- the **data** the energy reads from static buffers that every call fills with its ``inputs``,
- the **parameters and buffers** of the nets in place, so optimiser steps and
  ``load_state_dict`` (which copy into the same storage) are seen by the next replay,
- the **noise** from the caller's generator: its state is copied into a private generator
  registered with the graph before each replay and copied back afterwards, so the caller's stream
  advances exactly as an eager chain advances it (a chain without a generator draws from the
  device's default generator, which every graph follows by itself).

A graph is valid for one **key** (:mod:`lebm.samplers.capture.keys`): the sampler's settings, the
energy function with its owner's attributes or its closure, the shapes and dtypes of the state and
inputs, whether diagnostics are recorded, the reference precision, the autocast and TF32 state, and
a fingerprint of the modules the energy reads (every tensor's storage, dtype, shape and strides,
every other attribute by value, and what a module's ``chain_capture_key()`` adds). Any other call
captures again (a small least-recently-used cache per sampler) or runs eagerly, so a moved net, a
changed step size or count, a smaller last batch or another autocast state never replays a stale
graph; what the key cannot see runs eagerly. A chain that is dropped only retires its graph: graphs
are destroyed all together (:mod:`lebm.samplers.capture.recorders`), and a cached chain of a destroyed
generation records again.

Who is captured: while the run-wide switch is on (:mod:`lebm.samplers.capture.switch`, on by
default), a chain on a CUDA device whose sampler opted in (``capturable``; ``Langevin`` and
``PersistentChains`` do) and was not kept out by its own ``cuda_graph=False``, called with ``inputs=`` (the caller's
promise that the energy reads only ``z``, the inputs and the ``freeze`` modules), and whose modules
hold no recurrent net, hook or ``SyncBatchNorm``. Everything else runs eagerly, as every chain on
the CPU does. A chain that synchronises with the host is refused in its warm-up; a recording that
fails turns its sampler's capture off with one warning.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lebm.samplers.capture import switch
from lebm.samplers.capture.keys import (
    CapturableSampler,
    ChainCall,
    Unseen,
    energy_identity,
    is_sampler,
    why_not_captured,
)
from lebm.samplers.capture.recorders import (
    CaptureBroken,
    CaptureRejected,
    ChainBody,
    CUDAGraphStore,
    GraphRecorder,
    ReplayEmulator,
    capture_possible,
    emulate_on_cpu,
    first_line,
    recorder_for,
)

#: A sampler as this module sees it (``lebm.samplers.Sampler`` is one): a protocol, so that the
#: capture machinery imports no sampler and the samplers import it without a circle.
Sampler = CapturableSampler

__all__ = [
    "CACHE_SIZE",
    "CHURN_LIMIT",
    "WARMUP_RUNS",
    "CUDAGraphStore",
    "CapturedChain",
    "ChainCall",
    "ChainGraphs",
    "ReplayEmulator",
    "capture_possible",
    "capture_stats",
    "chain_graphs",
    "emulate_on_cpu",
    "run_captured",
    "samplers_of",
    "set_chain_capture",
]

#: Eager runs of a chain before its capture (cuBLAS/cuDNN handles, autotuning, autograd state).
WARMUP_RUNS = 2
#: Captured chains kept per sampler (training, evaluation and last-batch shapes, ...).
CACHE_SIZE = 8
#: Captures in a row without a single replay of a cached graph before a sampler stops capturing.
CHURN_LIMIT = 8


# ------------------------------------------------------------------------------- the cache
@dataclass
class CapturedChain:
    """One recorded chain: its replay, the static buffers it reads and the outputs it writes, and
    the store (and the store's generation) it was recorded in: a replay is valid only while that
    generation lives."""

    replay: Callable[[], None]
    static_z: Tensor
    static_inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, dict[str, Tensor]]
    private_generator: torch.Generator | None
    keep_alive: tuple[Any, ...]  # the energy's owner and the modules: their ids are in the key
    store: GraphRecorder
    generation: int

    def valid_in(self, store: GraphRecorder) -> bool:
        """Whether this chain may replay: recorded by ``store`` in its current generation."""
        return self.store is store and self.generation == store.generation

    def __call__(
        self, z0: Tensor, inputs: Sequence[Tensor], generator: torch.Generator | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Fill the static buffers, replay, hand the random stream back; fresh output tensors.
        The copies run without autograd: a ``z0`` with history must not give the static buffer a
        ``grad_fn``."""
        with torch.no_grad():
            self.static_z.copy_(z0)
            for static, value in zip(self.static_inputs, inputs, strict=True):
                static.copy_(value)
        if self.private_generator is not None:
            assert generator is not None
            self.private_generator.set_state(generator.get_state())
        self.replay()
        if self.private_generator is not None:
            generator.set_state(self.private_generator.get_state())
        z, diagnostics = self.outputs
        with torch.no_grad():
            return z.clone(), {name: value.clone() for name, value in diagnostics.items()}


class ChainGraphs:
    """The captured chains of one sampler and its counters (``captures``: chains recorded,
    ``replays``: calls served by a graph, ``eager_calls``: declared calls that ran eagerly).

    Dropping a chain (evicted, cleared, or this object garbage-collected with its sampler) only
    retires its graph in the store that recorded it (see :mod:`lebm.samplers.capture.recorders`: graphs
    are destroyed all together). Dropped (not copied) when its sampler is copied or pickled:
    graphs belong to one process and one set of modules.
    """

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self.entries: OrderedDict[Hashable, CapturedChain] = OrderedDict()
        self.captures = self.replays = self.eager_calls = 0
        self.misses_in_a_row = 0
        self.disabled: str | None = None
        self.warned: set[str] = set()

    def __deepcopy__(self, memo: dict[int, Any]) -> ChainGraphs:
        return ChainGraphs(self.size)

    def __reduce__(self) -> tuple[Any, ...]:
        return (ChainGraphs, (self.size,))

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.clear()

    def stats(self) -> dict[str, int]:
        return {"captures": self.captures, "replays": self.replays, "eager_calls": self.eager_calls}

    def drop(self, key: Hashable) -> None:
        """Forget one chain; its graph is retired (destroyed later, with every other)."""
        entry = self.entries.pop(key)
        if entry.valid_in(entry.store):
            entry.store.retire()

    def clear(self) -> None:
        """Forget every captured chain (their graphs are retired)."""
        for key in list(self.entries):
            self.drop(key)

    def warn_once(self, message: str, stacklevel: int) -> None:
        if message not in self.warned:
            self.warned.add(message)
            warnings.warn(message, stacklevel=stacklevel + 1)


def chain_graphs(sampler: Sampler) -> ChainGraphs:
    """The :class:`ChainGraphs` of ``sampler`` (created on first use)."""
    graphs = sampler.__dict__.get("_chain_graphs")
    if graphs is None:
        graphs = ChainGraphs()
        sampler.__dict__["_chain_graphs"] = graphs
    return graphs


def capture_stats(samplers: Iterable[Sampler]) -> dict[str, int]:
    """Captures, replays and eager calls summed over ``samplers``."""
    total = {"captures": 0, "replays": 0, "eager_calls": 0}
    for sampler in samplers:
        for name, count in chain_graphs(sampler).stats().items():
            total[name] += count
    return total


def run_captured(call: ChainCall, body_for: Callable[..., ChainBody]) -> tuple[Tensor, dict[str, Tensor]] | None:
    """Serve ``call`` from a captured chain (recording it first on a miss); None: run it eagerly.

    ``body_for(static_z, static_inputs, generator)`` builds the chain body over static buffers: the
    same ``sampler.run`` on a ``ChainTarget`` that an eager call runs.
    """
    graphs = chain_graphs(call.sampler)
    reason = graphs.disabled or why_not_captured(call.sampler, call.modules)
    store = None if reason else recorder_for(call.z0.device)
    if reason or store is None:
        graphs.eager_calls += 1
        return None
    try:
        key = call.key()
    except Unseen as unseen:
        graphs.warn_once(
            f"{type(call.sampler).__name__}: this chain runs eagerly because the capture key cannot see everything "
            f"its energy may read: {unseen}. Keep what the energy reads in tensors, scalars and containers of them, "
            "or list an attribute the energy never reads in the module's chain_capture_ignore (docs/extending.md, "
            "'Captured chains').",
            stacklevel=4,
        )
        graphs.eager_calls += 1
        return None
    if call.reached:  # modules the energy reads outside freeze: the same checks, and the warm-up undoes them too
        reason = why_not_captured(call.sampler, call.reached)
        if reason:
            graphs.eager_calls += 1
            return None
        call.modules = [*call.modules, *call.reached]
    entry = graphs.entries.get(key)
    released = entry is not None and not entry.valid_in(store)
    if released:
        graphs.drop(key)  # recorded in a generation that has been destroyed since: record it again
        entry = None
    if entry is not None:
        graphs.entries.move_to_end(key)
        graphs.replays += 1
        graphs.misses_in_a_row = 0
        return entry(call.z0, call.inputs, call.generator)
    if not released:  # a release makes every sampler record again: no sign of churn
        graphs.misses_in_a_row += 1
    if graphs.misses_in_a_row > CHURN_LIMIT:
        graphs.disabled = (
            f"{type(call.sampler).__name__} captured {CHURN_LIMIT} chains in a row without replaying one: "
            "something its graphs depend on changes at every call (a new energy function object, new modules, "
            "new shapes)"
        )
        graphs.warn_once(
            f"{graphs.disabled}. Its chains now run eagerly. Pass one energy function object and give the data it "
            "reads as inputs= (docs/extending.md, 'Captured chains').",
            stacklevel=4,
        )
        graphs.clear()
        graphs.eager_calls += 1
        return None
    if store.release_due():
        store.release_all()  # every graph of the device at once: the only safe way to destroy one
    entry = _capture(call, store, body_for, graphs)
    if entry is None:
        graphs.eager_calls += 1
        return None
    graphs.entries[key] = entry
    while len(graphs.entries) > graphs.size:
        graphs.drop(next(iter(graphs.entries)))
    graphs.captures += 1
    return entry(call.z0, call.inputs, call.generator)


def _capture(
    call: ChainCall, store: GraphRecorder, body_for: Callable[..., ChainBody], graphs: ChainGraphs
) -> CapturedChain | None:
    """Warm up and record ``call``'s chain; None when it cannot be recorded, after which the
    sampler's chains run eagerly (one warning names the cause).

    The warm-up runs are real chains: what they change (BatchNorm running statistics,
    spectral-norm vectors, a persistent-chain buffer, the device's default random stream) is put
    back afterwards, so a captured call changes exactly what an eager call changes.
    """
    with torch.no_grad():
        static_z = torch.empty(call.z0.shape, dtype=call.state_dtype(), device=call.z0.device)
        static_z.copy_(call.z0)
        static_inputs = tuple(t.detach().clone() for t in call.inputs)
    private = None
    if call.generator is not None:
        private = torch.Generator(device=call.generator.device)
        private.set_state(call.generator.get_state())
    body = body_for(static_z, static_inputs, private)
    saved = _SideEffects(call.modules, call.z0.device)
    name = type(call.sampler).__name__
    try:
        with _autocast_without_cache(call.z0.device):
            store.warm_up(body, WARMUP_RUNS)  # an error here is the chain's own: it propagates
    except CaptureRejected as rejected:
        return _give_up(graphs, f"{name}: this chain cannot be captured as a CUDA graph: {rejected}")
    finally:
        saved.restore()
    try:
        with _autocast_without_cache(call.z0.device):
            replay, outputs = store.record(body, [private] if private is not None else [])
    except CaptureBroken:
        raise  # the device cannot run eager work either: the run must stop, with the reason
    except torch.cuda.OutOfMemoryError as error:
        saved.restore()
        graphs.clear()
        store.release_all()  # give the recorded graphs' memory back to the eager chains
        if call.z0.device.type == "cuda":
            torch.cuda.empty_cache()
        return _give_up(
            graphs,
            f"{name}: CUDA ran out of memory while recording a chain of {call.z0.shape[0]} states of shape "
            f"{tuple(call.z0.shape[1:])} as a CUDA graph ({first_line(error)}). Every recorded chain was released. "
            "Lower the batch size, or turn capture off (-c recipes/speed/eager_chains.yaml)",
        )
    except Exception as error:  # noqa: BLE001 - any other failure to record means: run eagerly
        saved.restore()
        return _give_up(graphs, f"{name}: this chain could not be captured as a CUDA graph ({first_line(error)})")
    saved.restore()
    _, owner = energy_identity(call.energy_fn)
    return CapturedChain(
        replay, static_z, static_inputs, outputs, private, (owner, *call.modules), store, store.generation
    )


def _give_up(graphs: ChainGraphs, reason: str) -> None:
    """Turn capture off for this sampler (its chains are dropped), with one warning naming ``reason``."""
    graphs.disabled = reason
    graphs.clear()
    graphs.warn_once(
        f"{reason}. Its chains run eagerly from now on. A chain that synchronises with the host (.item(), "
        "printing a tensor, data-dependent shapes) cannot be captured: see docs/extending.md, 'Captured chains'.",
        stacklevel=6,
    )
    return None


def _autocast_without_cache(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The caller's autocast state with its cast cache off: a cast cached while recording would
    live in the graph's memory and be read by eager code after the graph's next replay."""
    if not torch.is_autocast_enabled(device.type):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.get_autocast_dtype(device.type), cache_enabled=False)


class _SideEffects:
    """The buffers of some modules (a flat list: each module's own buffers) and the device's
    default random stream, saved to be put back."""

    def __init__(self, modules: Sequence[nn.Module], device: torch.device) -> None:
        seen: set[int] = set()
        self.buffers: list[tuple[Tensor, Tensor]] = []
        for module in modules:
            for buffer in module._buffers.values():
                if buffer is not None and id(buffer) not in seen and buffer.numel():
                    seen.add(id(buffer))
                    self.buffers.append((buffer, buffer.detach().clone()))
        self.generator = _default_generator(device)
        self.random_state = self.generator.get_state()

    def restore(self) -> None:
        with torch.no_grad():
            for buffer, value in self.buffers:
                buffer.copy_(value)
        self.generator.set_state(self.random_state)


def _default_generator(device: torch.device) -> torch.Generator:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.default_generators[index]
    return torch.default_generator


# ------------------------------------------------------------------------------- reporting
def samplers_of(*owners: Any) -> list[Sampler]:
    """Every sampler reachable from ``owners`` (modules, callbacks, samplers): the attributes of
    every submodule, and the sampler a ``PersistentChains`` wraps; each once. Read only: reports
    and tests count captures with it; whether chains are captured is :mod:`.switch`'s."""
    found: dict[int, Sampler] = {}
    pending: list[Any] = list(owners)
    visited: set[int] = set()
    while pending:
        value = pending.pop()
        if id(value) in visited:
            continue
        visited.add(id(value))
        if is_sampler(value):
            found[id(value)] = value
        if isinstance(value, nn.Module):
            pending.extend(value.children())
        attributes = vars(value).values() if hasattr(value, "__dict__") else ()
        pending.extend(a for a in attributes if is_sampler(a) or isinstance(a, nn.Module))
    return list(found.values())


def set_chain_capture(enabled: bool, *owners: Any) -> Any:
    """The run-wide switch (:func:`lebm.samplers.capture.switch.set_chain_capture`; returns the
    previous setting), also callable as lebm 0.1 called it, with the models and callbacks whose
    samplers it switched: then, turning capture off also drops their recorded graphs (their memory
    returns at the next generation), and their samplers are returned, as 0.1 returned them."""
    previous = switch.set_chain_capture(enabled)
    if not owners:
        return previous
    samplers = samplers_of(*owners)
    if not enabled:
        for sampler in samplers:
            chain_graphs(sampler).clear()
    return samplers
