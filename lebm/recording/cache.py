"""Whole-chain capture: a sampler's K steps recorded once as one CUDA graph and replayed.

The graph reads the **state** and the **data** from static buffers that every call fills, the
**parameters and buffers** of the nets in place (optimiser steps and ``load_state_dict`` copy into
the same storage, so the next replay sees them), and the **noise** from the caller's generator,
whose state is handed to a private generator registered with the graph before each replay and
taken back after (a chain without a generator follows the device's default generator).

A graph serves only calls with its key (:mod:`.keys`); another call records again (a small
least-recently-used cache per sampler, :class:`ChainGraphs`) or, when the key cannot describe what
the chain reads, runs eagerly. A chain that is dropped only retires its graph: graphs are destroyed
all together (:mod:`.recorders`). A chain that synchronises with the host is refused in its
warm-up; a recording that fails turns its sampler's capture off with one warning.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lebm.recording.audit import Bindings, CodeWatch
from lebm.recording.keys import CapturableSampler, ChainCall, RunsEagerly, Unseen, chain_key, why_eager
from lebm.recording.recorders import (
    CaptureBroken,
    CaptureRejected,
    ChainBody,
    GraphStore,
    first_line,
    recorder_for,
)

#: Eager runs of a chain before its capture (cuBLAS/cuDNN handles, autotuning, autograd state).
WARMUP_RUNS = 2
#: Captured chains kept per sampler (training, evaluation and last-batch shapes, ...).
CACHE_SIZE = 8
#: Captures in a row without a single replay of a cached graph before a sampler stops capturing.
CHURN_LIMIT = 8


@dataclass
class CapturedChain:
    """One recorded chain: its replay, the static buffers it reads, the outputs it writes, and the
    store (and generation) it was recorded in: it may replay only while that generation lives."""

    replay: Callable[[], None]
    static_z: Tensor
    static_inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, dict[str, Tensor]]
    private_generator: torch.Generator | None
    keep_alive: tuple[Any, ...]  # the energy function and the modules: their ids are in the key
    store: GraphStore
    generation: int
    bindings: Bindings | None = None  # where the code the capture ran is bound: checked before each replay

    def valid(self) -> bool:
        return self.generation == self.store.generation

    def __call__(
        self, z0: Tensor, inputs: Sequence[Tensor], generator: torch.Generator | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Fill the static buffers (without autograd: a ``z0`` with history must not give them a
        ``grad_fn``), replay, hand the random stream back; fresh output tensors."""
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
    Dropped (not copied) when its sampler is copied or pickled: graphs belong to one process and
    one set of modules; dropping a chain retires its graph."""

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
        if entry.valid():
            entry.store.retire()

    def clear(self) -> None:
        for key in list(self.entries):
            self.drop(key)

    def warn_once(self, message: str, stacklevel: int) -> None:
        if message not in self.warned:
            self.warned.add(message)
            warnings.warn(message, stacklevel=stacklevel + 1)

    def give_up(self, reason: str) -> None:
        """Turn capture off for this sampler (its chains are dropped), with one warning naming ``reason``."""
        self.disabled = reason
        self.clear()
        self.warn_once(
            f"{reason}. Its chains run eagerly from now on. A chain that synchronises with the host (.item(), "
            "printing a tensor, data-dependent shapes) cannot be captured: see docs/extending.md, 'Captured chains'.",
            stacklevel=7,
        )


def chain_graphs(sampler: CapturableSampler) -> ChainGraphs:
    """The :class:`ChainGraphs` of ``sampler`` (created on first use)."""
    graphs = sampler.__dict__.get("_chain_graphs")
    if graphs is None:
        graphs = sampler.__dict__["_chain_graphs"] = ChainGraphs()
    return graphs


def run_captured(call: ChainCall, body_for: Callable[..., ChainBody]) -> tuple[Tensor, dict[str, Tensor]] | None:
    """Serve ``call`` from a captured chain (recording it first on a miss); None: run it eagerly.

    ``body_for(static_z, static_inputs, generator)`` builds the chain body over static buffers: the
    same ``sampler.run`` on a ``ChainTarget`` that an eager call runs.
    """
    graphs = chain_graphs(call.sampler)
    eager = graphs.disabled or why_eager(call.sampler)
    store = None if eager else recorder_for(call.z0.device)
    out = None
    if store is not None:
        try:
            key, modules = chain_key(call)
        except Unseen as unseen:
            graphs.warn_once(
                f"{type(call.sampler).__name__}: this chain runs eagerly because the capture key cannot see "
                f"everything its energy may read: {unseen}. Keep what the energy reads in tensors, scalars and "
                "containers of them, or list an attribute the energy never reads in the module's "
                "chain_capture_ignore (docs/extending.md, 'Captured chains').",
                stacklevel=4,
            )
        except RunsEagerly:
            pass
        else:
            out = _serve(call, key, modules, store, graphs, body_for)
    if out is None:
        graphs.eager_calls += 1
    return out


def _serve(
    call: ChainCall,
    key: Hashable,
    modules: list[nn.Module],
    store: GraphStore,
    graphs: ChainGraphs,
    body_for: Callable[..., ChainBody],
) -> tuple[Tensor, dict[str, Tensor]] | None:
    entry = graphs.entries.get(key)
    released = entry is not None and not (entry.store is store and entry.valid())
    if released:
        graphs.drop(key)  # recorded in a generation that has been destroyed since: record it again
        entry = None
    if entry is not None and entry.bindings is not None and not entry.bindings.unchanged():
        graphs.drop(key)  # a function it ran was replaced (a patched helper, a rebound method): record it again
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
            stacklevel=5,
        )
        graphs.clear()
        return None
    if store.release_due():
        store.release_all()  # every graph of the device at once: the only safe way to destroy one
    entry = _capture(call, modules, store, body_for, graphs)
    if entry is None:
        return None
    graphs.entries[key] = entry
    while len(graphs.entries) > graphs.size:
        graphs.drop(next(iter(graphs.entries)))
    graphs.captures += 1
    return entry(call.z0, call.inputs, call.generator)


def _capture(
    call: ChainCall,
    modules: list[nn.Module],
    store: GraphStore,
    body_for: Callable[..., ChainBody],
    graphs: ChainGraphs,
) -> CapturedChain | None:
    """Warm up and record ``call``'s chain; None when it cannot be recorded (then the sampler's
    chains run eagerly, one warning names the cause). The warm-up runs are real chains: what they
    change (the buffers of ``modules``: BatchNorm statistics, spectral-norm vectors, a persistent
    buffer; the device's default random stream) is put back, so a captured call changes exactly
    what an eager call changes."""
    with torch.no_grad():
        static_z = torch.empty(call.z0.shape, dtype=call.state_dtype(), device=call.z0.device)
        static_z.copy_(call.z0)
        static_inputs = tuple(t.detach().clone() for t in call.inputs)
    private = None
    if call.generator is not None:
        private = torch.Generator(device=call.generator.device)
        private.set_state(call.generator.get_state())
    body = body_for(static_z, static_inputs, private)
    restore = _saved_side_effects(modules, call.z0.device)
    name = type(call.sampler).__name__
    python_state = plain_state(call.sampler)
    try:
        with autocast_without_cache(call.z0.device):
            store.warm_up(body, WARMUP_RUNS)  # an error here is the chain's own: it propagates
    except CaptureRejected as rejected:
        return graphs.give_up(f"{name}: this chain cannot be captured as a CUDA graph: {rejected}")
    finally:
        restore()
    changed = sorted(key for key, value in plain_state(call.sampler).items() if python_state.get(key) != value)
    if changed:
        for key in changed:  # as an eager call would have left them: the warm-ups ran its Python too
            setattr(call.sampler, key, python_state[key])
        return graphs.give_up(
            f"{name}: its Python state ({', '.join(changed)}) changes at every call, and a captured chain replays "
            "without running its Python, so that state would stay as recorded; its chains run eagerly. Keep such "
            "state in a tensor (a buffer) to capture it"
        )
    code = CodeWatch(any_code=True)
    try:
        with autocast_without_cache(call.z0.device), code:
            replay, outputs = store.record(body, [private] if private is not None else [])
    except CaptureBroken:
        raise  # the device cannot run eager work either: the run must stop, with the reason
    except torch.cuda.OutOfMemoryError as error:
        restore()
        graphs.clear()
        store.release_all()  # give the recorded graphs' memory back to the eager chains
        if call.z0.device.type == "cuda":
            torch.cuda.empty_cache()
        return graphs.give_up(
            f"{name}: CUDA ran out of memory while recording a chain of {call.z0.shape[0]} states of shape "
            f"{tuple(call.z0.shape[1:])} as a CUDA graph ({first_line(error)}). Every recorded chain was released. "
            "Lower the batch size, or turn capture off (-c recipes/speed/eager_chains.yaml)",
        )
    except Exception as error:  # noqa: BLE001 - any other failure to record means: run eagerly
        restore()
        return graphs.give_up(f"{name}: this chain could not be captured as a CUDA graph ({first_line(error)})")
    restore()
    keep_alive = (call.energy_fn, *modules)
    bindings = Bindings(code.ran, [type(module) for module in modules], code.c_calls.values())
    return CapturedChain(
        replay, static_z, static_inputs, outputs, private, keep_alive, store, store.generation, bindings
    )


def autocast_without_cache(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The caller's autocast state with its cast cache off: a cast cached while recording would
    live in the graph's memory and be read by eager code after the graph's next replay."""
    if not torch.is_autocast_enabled(device.type):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.get_autocast_dtype(device.type), cache_enabled=False)


def _saved_side_effects(modules: Sequence[nn.Module], device: torch.device) -> Callable[[], None]:
    """Save every module's own buffers and the device's default random stream; return what puts them back."""
    buffers = {id(b): b for module in modules for b in module._buffers.values() if b is not None and b.numel()}
    return saved_values(buffers.values(), device)


def saved_values(tensors: Iterable[Tensor], device: torch.device) -> Callable[[], None]:
    """Save the values of ``tensors`` and the state of ``device``'s default random stream; return
    what puts them back (in place: the tensors keep their addresses)."""
    with torch.no_grad():
        saved = [(tensor, tensor.detach().clone()) for tensor in tensors]
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        generator = torch.cuda.default_generators[index]
    else:
        generator = torch.default_generator
    random_state = generator.get_state()

    def restore() -> None:
        with torch.no_grad():
            for tensor, value in saved:
                tensor.copy_(value)
        generator.set_state(random_state)

    return restore


#: Python values whose change between two calls a captured chain cannot replay.
PLAIN = (bool, int, float, str, type(None))


def plain_state(sampler: Any) -> dict[str, Any]:
    """The sampler's (or initializer's) attributes that are plain Python values or tuples, lists and
    dicts of them, copied: what a captured replay leaves as it was when recorded."""

    def plain(value: Any) -> bool:
        if isinstance(value, PLAIN):
            return True
        if isinstance(value, (tuple, list)):
            return all(plain(item) for item in value)
        if isinstance(value, dict):
            return all(isinstance(key, PLAIN) and plain(item) for key, item in value.items())
        return False

    attributes = vars(sampler) if hasattr(sampler, "__dict__") else {}
    return {key: copy.deepcopy(value) for key, value in attributes.items() if plain(value)}


def capture_stats(samplers: Iterable[CapturableSampler]) -> dict[str, int]:
    """Captures, replays and eager calls summed over ``samplers``."""
    total = {"captures": 0, "replays": 0, "eager_calls": 0}
    for sampler in samplers:
        for name, count in chain_graphs(sampler).stats().items():
            total[name] += count
    return total


def samplers_of(*owners: Any) -> list[CapturableSampler]:
    """Every sampler reachable from ``owners`` (modules, callbacks, samplers), and every chain
    initializer (they capture as samplers do): the attributes of every submodule, and the sampler a
    ``PersistentChains`` wraps; each once. Read only: reports
    and tests count captures with it."""

    def is_sampler(value: Any) -> bool:
        return callable(getattr(type(value), "capture_allowed", None)) and not isinstance(value, type)

    found: dict[int, CapturableSampler] = {}
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
