"""A strict CPU stand-in for a CUDA graph: record the aten operations a chain body runs, replay them.

:class:`OpReplayEmulator` records a chain body under a :class:`TorchDispatchMode` that logs every
aten operation the body executes: the forward pass and the backward pass that
``torch.autograd.grad`` runs inside it (on the CPU autograd runs the backward on the calling
thread, so the mode sees it). Its replay (:class:`OpReplay`) runs exactly the logged operations,
in order, without the Python body and without autograd, under the rules a CUDA graph follows:

- a tensor that an earlier logged operation produced is replaced by that operation's result in
  this replay (tensors are told apart by object identity; every tensor seen while recording is
  kept alive, so no ``id()`` is reused);
- a tensor from outside (static input buffers, parameters and buffers, constants) is the very
  object the recording saw, read live at replay time: what is written into it in place (an
  optimiser step, ``copy_`` into a static buffer) is seen, while an attribute *replaced* by a new
  tensor object is not (the replay reads the old object, as a graph reads the old address);
- every other argument (Python floats and ints, shapes, dtypes, devices) is baked in as recorded,
  so a Python number changed after recording is not seen (a *stale* replay, as on a GPU);
- random operations draw from the generator objects they were given while recording (the default
  generator when none), from that generator's current state: every replay draws fresh numbers;
- at the end, the replay's values of the tensors the body returned are copied into the tensors
  :meth:`OpReplayEmulator.record` returned, in place, as a graph writes its static outputs.

Operations that synchronise with the host or whose output shape depends on data cannot be
captured in a CUDA graph; recording one raises a :class:`RuntimeError` saying the operation is
"not permitted when stream is capturing", as a failed CUDA capture does.

Not seen, because they do not run an aten operation: reading a CPU tensor's memory directly
(``.tolist()``, ``.numpy()``; on a GPU both synchronise), and intermediate tensors a body stores
on an object for later (a graph overwrites them at every replay; here they keep their recorded values).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_leaves, tree_map

from lebm.samplers.capture.host_sync import uncapturable

ChainBody = Callable[[], tuple[Tensor, dict[str, Tensor]]]


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
class _LoggedOp:
    """One operation as it replays: tensors produced earlier replaced by refs, external tensors
    kept as objects, everything else baked in; ``frees``: ops whose results are dead after it."""

    func: torch._ops.OpOverload
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    frees: list[int] = field(default_factory=list)


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
        self.ops: list[_LoggedOp] = []
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
                f"OpReplayEmulator cannot replay a {value.dtype} tensor reinterpreting {dtype} memory it did not "
                "see reinterpreted"
            )
        return _Alias(base, tuple(value.size()), tuple(value.stride()), value.storage_offset())

    def __torch_dispatch__(
        self, func: torch._ops.OpOverload, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if uncapturable(func, args, kwargs):
            raise RuntimeError(
                f"OpReplayEmulator: operation not permitted when stream is capturing ({func}: a host synchronisation "
                "or a data-dependent shape)"
            )
        logged_args, logged_kwargs = tree_map(self.ref, (args, kwargs))
        result = func(*args, **kwargs)
        index = len(self.ops)
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor)]
        input_ids = {id(t) for t in inputs}
        input_memory = {_storage_key(t) for t in inputs}
        for leaf, value in enumerate(tree_leaves(result)):
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
    return [leaf.base if isinstance(leaf, _Alias) else leaf for leaf in tree_leaves(value) if isinstance(leaf, _Ref)]


class OpReplay:
    """A recorded chain body: calling it replays the logged operations (see the module docstring)
    and writes the results into ``outputs`` (the tensors :meth:`OpReplayEmulator.record` returned)."""

    def __init__(self, ops: list[_LoggedOp], outputs: list[tuple[Tensor, _Ref]]) -> None:
        self.ops = ops
        self.outputs = outputs
        last_use = {index: index for index in range(len(ops))}
        for index, op in enumerate(ops):
            for ref in _refs_in((op.args, op.kwargs)):
                last_use[ref.op] = index
        kept = {ref.op for ref in _refs_in([ref for _, ref in outputs])}
        for op_index, last in last_use.items():
            if op_index not in kept:
                ops[last].frees.append(op_index)

    @property
    def op_names(self) -> list[str]:
        """The logged operations, in order (``"aten.mm.default"``, ...)."""
        return [str(op.func) for op in self.ops]

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
            for index, op in enumerate(self.ops):
                args, kwargs = tree_map(value, (op.args, op.kwargs))
                results[index] = tree_leaves(op.func(*args, **kwargs))
                for dead in op.frees:
                    results[dead] = None
            for output, ref in self.outputs:
                output.copy_(value(ref))


class OpReplayEmulator:
    """The strict CPU recorder: :meth:`record` logs the aten operations of a chain body and
    returns an :class:`OpReplay` that replays them with every Python number baked in, so a stale
    replay shows on the CPU as it would on a GPU (see the module docstring for what is baked in
    and what is read live)."""

    def warm_up(self, body: ChainBody, runs: int) -> None:
        """Run ``body`` eagerly ``runs`` times."""
        for _ in range(runs):
            body()

    def record(self, body: ChainBody, generators: Sequence[torch.Generator]) -> tuple[Callable[[], None], Any]:
        """Run ``body`` once, logging its operations; return ``(replay, outputs)``, ``outputs``
        what ``body`` returned. ``generators`` need no registration: a random operation keeps the
        generator object it was given. Raises :class:`RuntimeError` ("not permitted when stream is
        capturing") when the body runs an operation a CUDA graph cannot capture."""
        log = _OpLog()
        with log:
            outputs = body()
        written = []
        for tensor in tree_flatten(outputs)[0]:
            ref = log.ref(tensor)
            if isinstance(ref, _Ref):  # an external output is written in place by the replay itself
                written.append((tensor, ref))
        return OpReplay(log.ops, written), outputs
