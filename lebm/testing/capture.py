"""Captured chains on a CPU, for tests: the capture machinery run without a GPU.

:func:`emulate_on_cpu` installs an :class:`EmulatedStore` as the CPU's recorder: inside it, a
declared chain on the CPU goes through everything a GPU chain goes through (its key, the cache, the
warm-up with host synchronisations refused, the undoing of the warm-up's side effects, retiring and
releasing graphs), with the CUDA graph itself emulated. Strict (the default), the emulation records
the aten operations the chain body runs and replays exactly those with their Python numbers baked
in, as a graph does (:func:`record_ops`), so a setting the key does not see shows as a stale replay
that differs from the eager chain. Not strict, a replay reruns the Python body.

:func:`record_ops` logs every aten operation the body executes under a ``TorchDispatchMode``: the
forward pass and the backward pass that ``torch.autograd.grad`` runs inside it (on the CPU autograd
runs the backward on the calling thread, so the mode sees it). Its replay (:class:`OpReplay`) runs
exactly the logged operations, in order, without the Python body and without autograd, under the
rules a CUDA graph follows:

- a tensor that an earlier logged operation produced is replaced by that operation's result in
  this replay (tensors are told apart by object identity; every tensor seen while recording is
  kept alive, so no ``id()`` is reused);
- a tensor from outside (static input buffers, parameters and buffers, constants) is the very
  object the recording saw, read live at replay time: what is written into it in place (an
  optimiser step, ``copy_`` into a static buffer) is seen, while an attribute *replaced* by a new
  tensor is not (the replay reads the old object, as a graph reads the old address);
- every other argument (Python floats and ints, shapes, dtypes, devices) is baked in as recorded,
  so a Python number changed after recording is not seen (a *stale* replay, as on a GPU);
- random operations draw from the generator objects they were given while recording (the default
  generator when none), from that generator's current state: every replay draws fresh numbers;
- at the end, the replay's values of the tensors the body returned are copied into the tensors
  :func:`record_ops` returned, in place, as a graph writes its static outputs;
- work the body left out of the recording (``outside_the_recording``: a gradient all-reduce) is not
  run while recording and runs at every replay in its place, as between two CUDA graphs.

Operations that synchronise with the host or whose output shape depends on data cannot be
captured in a CUDA graph; recording one raises a :class:`RuntimeError` saying the operation is
"not permitted when stream is capturing", as a failed CUDA capture does. Not seen, because they run
no aten operation: reading a CPU tensor's memory directly (``.tolist()``, ``.numpy()``; on a GPU
both synchronise), and intermediate tensors a body stores on an object for later (a graph
overwrites them at every replay; here they keep their recorded values).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lebm.recording.host_sync import uncapturable
from lebm.recording.recorders import ChainBody, GraphStore, host_gaps, run_refusing_host_sync, set_cpu_store
from lebm.recording.torch_internals import TorchDispatchMode, leaves_of, map_leaves, tree_flatten


@dataclass(frozen=True)
class _Produced:
    """Output ``leaf`` (position among the flattened results) of logged operation ``op``."""

    op: int
    leaf: int


@dataclass(frozen=True)
class _Alias:
    """A tensor object the log never saw that shares the memory a logged operation allocated
    (``base``): replayed as the same window (size, stride, storage offset) of the replayed base."""

    base: _Produced
    size: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int


_Ref = _Produced | _Alias


@dataclass
class _HostWork:
    """Work the body left out of the recording (``outside_the_recording``): run at every replay, in its place."""

    work: Callable[[], None]
    frees: list[int] = field(default_factory=list)


@dataclass
class _LoggedOp:
    """One operation as it replays: tensors produced earlier replaced by refs, external tensors
    kept as objects, everything else baked in; ``frees``: ops whose results are dead after it."""

    func: torch._ops.OpOverload
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    frees: list[int] = field(default_factory=list)


@dataclass
class _Arguments:
    """A logged operation's arguments laid out for a replay: ``args`` and ``kwargs`` as logged, and
    where a ref sits in them (``slots``: a positional index or a keyword, with the ref or, for a
    container holding refs, the container), so a replay rebuilds only those places."""

    args: list[Any]
    kwargs: dict[str, Any]
    slots: list[tuple[int | str, Any, bool]]  # (place, ref or container, whether a container)

    @classmethod
    def of(cls, op: _LoggedOp) -> _Arguments:
        slots: list[tuple[int | str, Any, bool]] = []
        places: list[tuple[int | str, Any]] = [*enumerate(op.args), *op.kwargs.items()]
        for place, value in places:
            if isinstance(value, _Produced | _Alias):
                slots.append((place, value, False))
            elif isinstance(value, list | tuple | dict) and _refs_in(value):
                slots.append((place, value, True))
        return cls(list(op.args), dict(op.kwargs), slots)


def _storage_key(tensor: Tensor) -> int:
    """The address of ``tensor``'s memory (0: none, or empty)."""
    try:
        storage = tensor.untyped_storage()
    except (RuntimeError, NotImplementedError):
        return 0
    return storage.data_ptr() if storage.nbytes() else 0


class _OpLog(TorchDispatchMode):
    """Logs every aten operation run under it (see the module docstring); rejects the uncapturable."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[_LoggedOp | _HostWork] = []
        self.producers: dict[int, _Produced] = {}  # id(tensor) -> the op whose result it is
        self.allocations: dict[int, tuple[_Produced, torch.dtype]] = {}  # memory address -> the op that allocated it
        self.alive: list[Tensor] = []  # every tensor seen: keeps each id() unique while recording

    def ref(self, value: Any) -> Any:
        """What replay will use for ``value``: a ref for a tensor an earlier op produced (or one
        sharing its memory), the object itself for any other value."""
        if not isinstance(value, Tensor):
            return value
        self.alive.append(value)
        produced = self.producers.get(id(value))
        if produced is not None:
            return produced
        allocation = self.allocations.get(_storage_key(value))
        if allocation is None:
            return value  # external: read live at replay
        base, dtype = allocation
        if value.dtype != dtype:
            raise RuntimeError(
                f"the op replay cannot replay a {value.dtype} tensor reinterpreting {dtype} memory it did not "
                "see reinterpreted"
            )
        return _Alias(base, tuple(value.size()), tuple(value.stride()), value.storage_offset())

    def __torch_dispatch__(
        self, func: torch._ops.OpOverload, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if uncapturable(func, args, kwargs):
            raise RuntimeError(
                f"op replay: operation not permitted when stream is capturing ({func}: a host synchronisation "
                "or a data-dependent shape)"
            )
        logged_args, logged_kwargs = map_leaves(self.ref, (args, kwargs))
        result = func(*args, **kwargs)
        index = len(self.ops)
        inputs = [t for t in leaves_of((args, kwargs)) if isinstance(t, Tensor)]
        input_ids = {id(t) for t in inputs}
        input_memory = {_storage_key(t) for t in inputs}
        for leaf, value in enumerate(leaves_of(result)):
            if not isinstance(value, Tensor) or id(value) in input_ids:
                continue  # in place, or out=: the input object itself, already known
            self.alive.append(value)
            self.producers[id(value)] = _Produced(index, leaf)
            memory = _storage_key(value)
            if memory and memory not in input_memory:  # fresh memory (not a view of an input)
                self.allocations.setdefault(memory, (_Produced(index, leaf), value.dtype))
        self.ops.append(_LoggedOp(func, logged_args, logged_kwargs))
        return result


def _refs_in(value: Any) -> list[_Produced]:
    return [leaf.base if isinstance(leaf, _Alias) else leaf for leaf in leaves_of(value) if isinstance(leaf, _Ref)]


class OpReplay:
    """A recorded chain body: calling it replays the logged operations (see the module docstring)
    and writes the results into ``outputs`` (the tensors :func:`record_ops` returned)."""

    def __init__(self, ops: list[_LoggedOp | _HostWork], outputs: list[tuple[Tensor, _Ref]]) -> None:
        self.ops = ops
        self.outputs = outputs
        last_use = {index: index for index in range(len(ops))}
        for index, op in enumerate(ops):
            if isinstance(op, _HostWork):
                continue
            for ref in _refs_in((op.args, op.kwargs)):
                last_use[ref.op] = index
        kept = {ref.op for ref in _refs_in([ref for _, ref in outputs])}
        for op_index, last in last_use.items():
            if op_index not in kept:
                ops[last].frees.append(op_index)
        self._arguments = [None if isinstance(op, _HostWork) else _Arguments.of(op) for op in ops]

    @property
    def op_names(self) -> list[str]:
        """The logged operations, in order (``"aten.mm.default"``, ...)."""
        return [str(op.func) if isinstance(op, _LoggedOp) else "host work" for op in self.ops]

    def __len__(self) -> int:
        return len(self.ops)

    def __call__(self) -> None:
        results: list[list[Any] | None] = [None] * len(self.ops)

        def value(leaf: Any) -> Any:
            if isinstance(leaf, _Produced):
                return results[leaf.op][leaf.leaf]
            if isinstance(leaf, _Alias):
                base = results[leaf.base.op][leaf.base.leaf]
                return base.as_strided(leaf.size, leaf.stride, leaf.offset)
            return leaf

        with torch.no_grad():
            for index, (op, laid_out) in enumerate(zip(self.ops, self._arguments, strict=True)):
                if laid_out is None:  # host work
                    op.work()
                    results[index] = []
                else:  # the logged arguments with each ref (or container of refs) replaced: tree_map's result
                    args, kwargs = laid_out.args, laid_out.kwargs
                    if laid_out.slots:
                        args, kwargs = args.copy(), kwargs.copy()
                        for place, ref, container in laid_out.slots:
                            found = map_leaves(value, ref) if container else value(ref)
                            if isinstance(place, int):
                                args[place] = found
                            else:
                                kwargs[place] = found
                    out = op.func(*args, **kwargs)
                    results[index] = [out] if isinstance(out, Tensor) else leaves_of(out)
                for dead in op.frees:
                    results[dead] = None
            for output, ref in self.outputs:
                output.copy_(value(ref))


def record_ops(body: ChainBody) -> tuple[OpReplay, Any]:
    """Run ``body`` once, logging its operations; return ``(replay, outputs)``, ``outputs`` what
    ``body`` returned (see the module docstring for what a replay bakes in and what it reads live).
    Raises :class:`RuntimeError` ("not permitted when stream is capturing") when the body runs an
    operation a CUDA graph cannot capture."""
    log = _OpLog()
    with log, host_gaps(lambda work: log.ops.append(_HostWork(work))):
        outputs = body()
    written = []
    for tensor in tree_flatten(outputs)[0]:
        ref = log.ref(tensor)
        if isinstance(ref, _Ref):  # an external output is written in place by the replay itself
            written.append((tensor, ref))
    return OpReplay(log.ops, written), outputs


class EmulatedStore(GraphStore):
    """The CPU's recorder inside :func:`emulate_on_cpu`: a CUDA store's lifetime rules (a graph is
    retired, never destroyed alone; every graph is destroyed at once; a destroyed recording refuses
    to replay), its warm-up (the last run refusing host synchronisations), and an emulated
    recording: :func:`record_ops` when ``strict``, else a rerun of the body. ``alive`` holds one
    flag per recording not destroyed yet, ``destroyed`` counts those destroyed."""

    def __init__(self, strict: bool = True) -> None:
        super().__init__(torch.device("cpu"))
        self.strict = strict
        self.alive: list[list[bool]] = []
        self.destroyed = 0

    recording_runs_body = True

    def run_on_capture_stream(self, work: Callable[[], Any]) -> Any:
        return work()

    def warm_up(self, body: ChainBody, runs: int) -> None:
        for _ in range(runs - 1):
            body()
        run_refusing_host_sync(body)

    def record(self, body: ChainBody, generators: Sequence[torch.Generator]) -> tuple[Callable[[], None], Any]:
        """``generators`` need no registration: a random operation keeps the generator object it was
        given. A recording that fails retires its graph, as a CUDA store retires the graph a failed
        capture began (destroyed with the others, at the next release)."""
        try:
            if self.strict:
                replay, outputs = record_ops(body)
            else:
                outputs = body()
        except BaseException:
            self.retire()
            raise
        if not self.strict:

            def replay() -> None:
                z, diagnostics = body()
                outputs[0].copy_(z)
                for name, value in diagnostics.items():
                    outputs[1][name].copy_(value)

        alive = [True]
        self.alive.append(alive)

        def guarded_replay() -> None:
            if not alive[0]:
                raise RuntimeError("replay of a destroyed graph")
            replay()

        return guarded_replay, outputs

    def _destroy_all(self) -> None:
        for alive in self.alive:
            alive[0] = False
        self.destroyed += len(self.alive)
        self.alive.clear()


@contextlib.contextmanager
def emulate_on_cpu(strict: bool = True) -> Iterator[EmulatedStore]:
    """Within this context, declared chains on the CPU go through the capture machinery, recorded
    by an :class:`EmulatedStore` (``strict``: the op replay, else a rerun of the body): a check on a
    CPU that a sampler or an energy behaves under capture (same numbers, same random streams, no
    stale replay) before a GPU run. Yields the store, whose counters tests may read."""
    store = EmulatedStore(strict)
    previous = set_cpu_store(store)
    try:
        yield store
    finally:
        set_cpu_store(previous)
