"""What a recorded training iteration may not read or change on the host, and how a recording sees it.

A recording runs a method's ``training_iteration`` once and bakes what its Python read into the
graph: a replay runs no Python. So while it records (:class:`~lebm.recording.recorded_iteration.IterationRecorder`),
lebm watches for what the key (:mod:`lebm.recording.iteration_key`) cannot vouch for, and a recording
that meets one raises :class:`RecordingRefused`: that iteration and every later one run eagerly,
with one line naming it.

- **Reads of the host not declared**: ``self.global_step`` and ``self.current_epoch`` (or the
  Trainer's own, :func:`noting_trainer_reads`) read in the iteration but not in the method's
  ``iteration_key()`` (``Method.noting_host_reads``), and the ``batch_idx`` argument used at all
  (:class:`WatchedIndex`): a replay would use the recorded value;
- **Python's and NumPy's random streams** drawn from (:class:`HostRandomStates`): a replay would draw
  nothing from them;
- ``self.log`` inside the iteration and non-tensor values in the step's logs (``lebm.models.Method``);
- **a tensor made from a Python number** (``torch.tensor(lr)``, ``torch.as_tensor(x)``:
  :class:`NumbersRefused`): a replay repeats the recorded number.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import operator
import random
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from lebm.recording.recorders import inside_recording
from lebm.recording.torch_internals import TorchDispatchMode


class RecordingRefused(RuntimeError):
    """A recording met something a replay cannot repeat: the message names it (the model's iterations run eagerly)."""


#: The binary operations through which Python code reads a number: ``__op__`` and ``__rop__`` each.
_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "truediv": operator.truediv,
    "floordiv": operator.floordiv,
    "mod": operator.mod,
    "pow": operator.pow,
    "divmod": divmod,
    "and": operator.and_,
    "or": operator.or_,
    "xor": operator.xor,
    "lshift": operator.lshift,
    "rshift": operator.rshift,
}
#: The comparisons (no reflected form).
_COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}
#: The one-operand reads: conversions, hashing, formatting, unary operators, rounding.
_UNARY: dict[str, Callable[..., Any]] = {
    "index": int,
    "int": int,
    "float": float,
    "complex": complex,
    "bool": bool,
    "hash": hash,
    "str": str,
    "repr": repr,
    "neg": operator.neg,
    "pos": operator.pos,
    "abs": abs,
    "invert": operator.invert,
    "format": format,
    "round": round,
    "trunc": math.trunc,
    "floor": math.floor,
    "ceil": math.ceil,
}


class WatchedIndex:
    """A stand-in for the batch index handed to a recording: it behaves as the ``int`` it holds in
    Python code (arithmetic with ints and floats on either side, comparison, hashing, formatting,
    indexing and ``range`` through ``__index__``) and adds ``name`` to ``reads`` whenever its value is
    read so. Handed on untouched (``finish_training_step(logs, watch, batch_idx)``), it notes
    nothing. A torch function that wants a Python number refuses it (a ``TypeError`` naming
    ``WatchedIndex``), which the recorder reads as a read of the index too; so does code that
    needs ``isinstance(batch_idx, int)``."""

    def __init__(self, value: int, reads: set[str], name: str = "batch_idx") -> None:
        self._value = int(value)
        self._reads = reads
        self._name = name

    def _read(self) -> int:
        self._reads.add(self._name)
        return self._value


def _unary(function: Callable[..., Any]) -> Callable[..., Any]:
    return lambda self, *args: function(self._read(), *args)


def _binary(function: Callable[[Any, Any], Any], reflected: bool) -> Callable[[Any, Any], Any]:
    if reflected:
        return lambda self, other: function(other, self._read())
    return lambda self, other: function(self._read(), other)


for _name, _function in _UNARY.items():
    setattr(WatchedIndex, f"__{_name}__", _unary(_function))
for _name, _function in _COMPARISONS.items():
    setattr(WatchedIndex, f"__{_name}__", _binary(_function, reflected=False))
for _name, _function in _BINARY.items():
    setattr(WatchedIndex, f"__{_name}__", _binary(_function, reflected=False))
    setattr(WatchedIndex, f"__r{_name}__", _binary(_function, reflected=True))


#: The Trainer's properties a recording watches (declared by a read of either the method's or the Trainer's).
TRAINER_READS = ("global_step", "current_epoch")
#: The Trainer's attributes that hold the step's logged tensors, new ones at every step: no key can
#: declare them (a replay would read the recorded ones), so a recording that reads one is refused.
LOGGED_EACH_STEP = ("callback_metrics", "logged_metrics", "progress_bar_metrics")
#: Packages whose reads of the Trainer are the loop's own bookkeeping, not the iteration's.
_LOOP_PACKAGES = ("lightning", "lightning_fabric", "pytorch_lightning", "torchmetrics")
_watched_classes: dict[type, type] = {}


def _watched_class(kind: type) -> type:
    """A subclass of the Trainer's class whose :data:`TRAINER_READS` note a read from outside
    Lightning in the set the instance holds (``_lebm_host_reads``)."""
    if kind not in _watched_classes:

        def watched(name: str) -> property:
            plain = getattr(kind, name)

            def read(self: Any) -> Any:
                frame = inspect.currentframe()
                caller = frame.f_back.f_globals.get("__name__", "") if frame and frame.f_back else ""
                reads = self.__dict__.get("_lebm_host_reads")
                if reads is not None and caller.split(".")[0] not in _LOOP_PACKAGES:
                    reads.add(f"trainer.{name}")
                return plain.fget(self)

            return property(read, doc=plain.__doc__)

        plain_get = kind.__getattribute__

        def note_any_read(self: Any, name: str) -> Any:
            """Any other public attribute read from outside Lightning's loop and lebm: noted as
            ``trainer.NAME``; inside a recording, one of :data:`LOGGED_EACH_STEP` is refused at once."""
            if name not in TRAINER_READS and not name.startswith("_"):
                reads = plain_get(self, "__dict__").get("_lebm_host_reads")
                if reads is not None:
                    caller = sys._getframe(1).f_globals.get("__name__", "")
                    if caller.split(".")[0] not in (*_LOOP_PACKAGES, "lebm"):
                        if name in LOGGED_EACH_STEP and inside_recording():
                            raise RecordingRefused(
                                f"its training iteration reads trainer.{name}, tensors Lightning's logging replaces at "
                                "every step, which a replay would read as recorded: this iteration stays eager (read "
                                "them in after_iteration(), on the host, or keep what it needs on the method)"
                            )
                        reads.add(f"trainer.{name}")
            return plain_get(self, name)

        namespace: dict[str, Any] = {name: watched(name) for name in TRAINER_READS}
        namespace["__getattribute__"] = note_any_read
        _watched_classes[kind] = type(kind.__name__, (kind,), {**namespace, "__module__": kind.__module__})
    return _watched_classes[kind]


@contextlib.contextmanager
def noting_trainer_reads(trainer: Any, reads: set[str] | None) -> Iterator[None]:
    """Within the block, a read of ``trainer.global_step`` or ``trainer.current_epoch`` from outside
    Lightning's own loop is added to ``reads`` as ``"trainer.global_step"`` ..., and a read of any
    other public attribute from outside Lightning and lebm as ``"trainer.NAME"``
    (``trainer.fit_loop``, ``trainer.callbacks``, ``trainer.callback_metrics``) (the Trainer's class
    is a subclass that notes them, put back after). ``trainer`` None, or ``reads`` None: nothing is watched."""
    if trainer is None or reads is None:
        yield
        return
    kind = type(trainer)
    trainer.__class__ = _watched_class(kind)
    trainer.__dict__["_lebm_host_reads"] = reads
    try:
        yield
    finally:
        trainer.__dict__.pop("_lebm_host_reads", None)
        trainer.__class__ = kind


#: What works instead of a tensor made from a Python number inside a recorded iteration.
NUMBER_ADVICE = (
    "compute it from tensors the method holds (a buffer, updated in place), or, for a value only logged (a "
    "learning rate), self.log it in after_iteration(), which runs on the host after every replay"
)


class NumbersRefused(TorchDispatchMode):
    """Within it, an aten operation that makes a tensor from Python data (``lift_fresh``: what
    ``torch.tensor`` and ``torch.as_tensor`` of a number or a list run) raises
    :class:`RecordingRefused`: a replay would repeat the number the recording saw. (``scalar_tensor``
    is not refused: torch's own operations run it for a constant, ``torch.where(c, x, 0.0)``.)"""

    #: The operations through which Python data becomes a tensor.
    FROM_PYTHON = ("lift_fresh", "lift_fresh_copy")

    def __torch_dispatch__(
        self, func: torch._ops.OpOverload, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        if func._overloadpacket.__name__ in self.FROM_PYTHON:
            raise RecordingRefused(
                "its training iteration makes a tensor from a Python number (torch.tensor or torch.as_tensor: "
                f"{func}), which a replay would repeat as recorded: {NUMBER_ADVICE}"
            )
        return func(*args, **(kwargs or {}))


class OptimisationSettings:
    """The optimisers' group settings (every entry but the parameters) and the learning-rate
    schedulers' states when made; :meth:`changed` names the first one changed since (a scheduler
    stepped, a rate set inside the iteration: a replay would not do it again), and :meth:`restore`
    puts them back (after a refused recording, so its eager re-run does it once)."""

    def __init__(self, optimizers: list[Any], schedulers: list[Any]) -> None:
        self._optimizers = [getattr(optimizer, "optimizer", optimizer) for optimizer in optimizers]
        self._schedulers = [scheduler for scheduler in schedulers if hasattr(scheduler, "state_dict")]
        self._groups = [self._settings(optimizer) for optimizer in self._optimizers]
        self._states = [copy.deepcopy(scheduler.state_dict()) for scheduler in self._schedulers]

    @staticmethod
    def _settings(optimizer: Any) -> list[dict[str, Any]]:
        return [{k: copy.copy(v) for k, v in group.items() if k != "params"} for group in optimizer.param_groups]

    def changed(self) -> str | None:
        """The first setting changed since this was made, named (None: none)."""
        for index, (optimizer, before) in enumerate(zip(self._optimizers, self._groups, strict=True)):
            for group, (now, then) in enumerate(zip(self._settings(optimizer), before, strict=True)):
                name = next((k for k in now if not _same(now[k], then.get(k))), None)
                if name is not None:
                    return f"optimiser {index}'s {name!r} (group {group})"
        for scheduler, before in zip(self._schedulers, self._states, strict=True):
            if not _same(scheduler.state_dict(), before):
                return f"a learning-rate scheduler's state ({type(scheduler).__name__}: stepped?)"
        return None

    def restore(self) -> None:
        """Put every group setting and scheduler state back as they were when this was made."""
        for optimizer, before in zip(self._optimizers, self._groups, strict=True):
            for group, settings in zip(optimizer.param_groups, before, strict=True):
                group.update(settings)
        for scheduler, before in zip(self._schedulers, self._states, strict=True):
            scheduler.load_state_dict(before)


def _same(a: Any, b: Any) -> bool:
    """Whether two settings are equal (tensors by value, containers item by item)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - an object that cannot be compared: take it as changed
        return a is b


class HostRandomStates:
    """Python's and NumPy's global random states when made; :meth:`changed` names those drawn from
    since, and :meth:`restore` puts them back."""

    def __init__(self) -> None:
        self.python = random.getstate()
        self.numpy = np.random.get_state()

    def changed(self) -> list[str]:
        now = np.random.get_state()
        names = []
        if random.getstate() != self.python:
            names.append("Python's random")
        same_numpy = now[0] == self.numpy[0] and np.array_equal(now[1], self.numpy[1])
        if not (same_numpy and tuple(now[2:]) == tuple(self.numpy[2:])):
            names.append("NumPy's random")
        return names

    def restore(self) -> None:
        random.setstate(self.python)
        np.random.set_state(self.numpy)
