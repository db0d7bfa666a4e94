"""The capture key: what a recorded chain depends on, described by one set of rules.

A graph replays its kernels with every Python number baked in as it was recorded, and reads tensors
at the addresses it recorded. So it serves a call only under the key it was recorded with, and a
chain whose reads the key cannot describe runs eagerly. :func:`chain_key` builds a call's key from
the sampler, the energy function, the ``freeze`` modules, the shapes, dtypes and devices of the
start and the inputs, the reference precision, what is recorded, whether a generator is given, and
the autocast and TF32 state. It changes nothing: it returns the key and the modules it met, which
the caller checks and whose warm-up side effects it undoes.

**The rules** (:meth:`Description.of`), applied alike to lebm's modules, torch's and a user's:

- ``None``, bool, int, float, str, a dtype, device, enum or type: by value;
- a tensor: storage address, dtype, shape and strides (its values are read live: an optimiser step
  or an in-place load is seen, a tensor *replaced* by another is a new key);
- a list, tuple, dict or set: element by element;
- a module: its whole tree, each module once (met again: by identity), each by its type, its
  parameters and buffers (as tensors), every other entry of its ``__dict__``, public or private,
  the train flag included (not ``nn.Module``'s own bookkeeping: :data:`NOT_STATE`), and what its
  ``chain_capture_key()`` returns. An attribute the forward never reads but that changes at every
  call (a step counter) is named in the module's ``chain_capture_ignore``;
- a function: identity, defaults and closure cells; a bound method: its function and its owner
  (an owner that defines ``chain_capture_owner_key()``, such as a LightningModule, is described by
  what that returns); a ``functools.partial``: function and arguments; a builtin or a Python
  module: identity;
- any other object (a sampler too): type, identity and attributes, when its whole state is its
  ``__dict__`` (an object with slots or C state, such as ``random.Random``, is unseen);
- what the user's code a chain runs reads outside these objects (module-level names, closure cells,
  default arguments: :mod:`~lebm.recording.code_reads`), by these rules; an assignment to a
  module-level name is unseen.

Anything else makes the chain run eagerly, with one warning naming it (:class:`Unseen`): an object
without ``__dict__``, or objects nested deeper than :data:`DEPTH` within one attribute. So do, without a
warning (:class:`RunsEagerly`), modules the key cannot vouch for (:func:`refuse`: hooks, recurrent
nets, ``SyncBatchNorm``, ``chain_capture = False``) and calls :func:`why_eager` names.
"""

from __future__ import annotations

import enum
import functools
import os
import types
from collections.abc import Callable, Container, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from lebm.recording.code_reads import code_reads, first_not_plain, is_trusted
from lebm.recording.torch_internals import active_thread_modes, global_module_hooks, has_module_hooks

#: How deep containers and plain objects may nest within one attribute, closure cell or owner.
DEPTH = 5
#: ``__dict__`` entries that are no state a forward reads: ``nn.Module``'s bookkeeping (hook,
#: parameter, buffer and child dicts; ``compile()``'s compiled call, which computes the same forward
#: from the same state) and lebm's (a sampler's captured chains, a part's recorded arguments).
NOT_STATE = frozenset(vars(nn.Module())) - {"training"} | {"_compiled_call_impl", "_chain_graphs", "_lebm_init_config"}

#: The size of an object whose whole state is its ``__dict__`` (a plain Python class's instance): a
#: larger one holds slots or C state the key cannot read (``random.Random``'s generator).
_DICT_ONLY_SIZE = type("_DictOnly", (), {}).__basicsize__

_VALUES = (type(None), bool, int, float, complex, str, bytes, type, enum.Enum)
_VALUES += (torch.dtype, torch.device, torch.Size, torch.memory_format, torch.layout)
#: The commonest of them as exact types (a module's flags and settings), checked without a call.
_EXACT_VALUES = frozenset({type(None), bool, int, float, str})


class CapturableSampler(Protocol):
    """What the capture machinery asks of a sampler (``lebm.samplers.Sampler`` answers it): a
    protocol, so that this package imports no sampler."""

    def capture_allowed(self) -> bool: ...


class RunsEagerly(Exception):
    """A chain the key cannot vouch for: it runs eagerly (the message says why)."""


class Unseen(RunsEagerly):
    """A value the key cannot describe: the chain runs eagerly, with one warning naming it."""


def tensor_id(tensor: Tensor) -> Hashable:
    """What a graph holds of a tensor it reads in place: storage address, dtype, shape and strides
    (``torch.Size`` and ``stride()`` are tuples already: hashed and compared as such)."""
    return ("tensor", tensor.data_ptr(), tensor.dtype, tensor.shape, tensor.stride())


def tree_modules(root: nn.Module, leave_out: Container[int] = ()) -> list[nn.Module]:
    """Every module of ``root``'s tree once (``root.modules()``, without its generators' cost: it
    runs at every key), but those whose ids are in ``leave_out`` and the trees below them."""
    found, met, stack = [], set(), [root]
    while stack:
        module = stack.pop()
        if id(module) in met or id(module) in leave_out:
            continue
        met.add(id(module))
        found.append(module)
        stack.extend(module.children())
    return found


def refuse(module: nn.Module) -> None:
    """Raise :class:`RunsEagerly` for a module whose reads the key cannot vouch for."""
    name = type(module).__name__
    if isinstance(module, nn.RNNBase):
        raise RunsEagerly(f"the energy reads a recurrent net ({name}), which lebm does not capture")
    if isinstance(module, nn.SyncBatchNorm):
        raise RunsEagerly(f"the energy reads a SyncBatchNorm ({name}): its collectives cannot be recorded")
    if module.__dict__.get("chain_capture", getattr(type(module), "chain_capture", True)) is False:
        raise RunsEagerly(f"{name} declares chain_capture = False")
    if has_module_hooks(module):
        raise RunsEagerly(
            f"{name} has forward or backward hooks (e.g. the hook-style torch.nn.utils.spectral_norm): the key cannot "
            "see what a hook reads; use torch.nn.utils.parametrizations.spectral_norm"
        )


class Description:
    """One key being built: :meth:`of` describes a value by the rules of the module docstring;
    :attr:`modules` holds every module met, in order (each described once), :attr:`objects` every
    other object described by its attributes."""

    def __init__(self) -> None:
        self.modules: dict[int, nn.Module] = {}
        self.objects: dict[int, Any] = {}  # the plain objects described attribute by attribute (samplers ...)
        self.tensors: dict[int, Tensor] = {}  # every tensor described (by address: a stamp checks them cheaply)
        self.containers: dict[int, Any] = {}  # every list, dict and set described item by item
        self._open: set[int] = set()  # the objects being described: one met again inside is a cycle

    def of(self, value: Any, where: str, depth: int = 0) -> Hashable:
        """``value`` described by the rules (``where`` names it in an :class:`Unseen`'s message)."""
        if isinstance(value, _VALUES):
            return value
        if isinstance(value, Tensor):
            self.tensors[id(value)] = value
            return tensor_id(value)
        if isinstance(value, nn.Module):
            return self.module(value, where)
        if id(value) in self._open:
            return ("cycle", id(value))
        if depth >= DEPTH:
            raise Unseen(f"{where} nests objects deeper than {DEPTH} levels")
        self._open.add(id(value))
        try:
            return self._composite(value, where, depth + 1)
        finally:
            self._open.discard(id(value))

    def _composite(self, value: Any, where: str, depth: int) -> Hashable:
        if isinstance(value, (list, dict, set)):
            self.containers[id(value)] = value
        if isinstance(value, (list, tuple)):
            return (type(value), tuple(self.of(v, f"{where}[{i}]", depth) for i, v in enumerate(value)))
        if isinstance(value, dict):
            return (
                dict,
                tuple((self.of(k, where, depth), self.of(v, f"{where}[{k!r}]", depth)) for k, v in value.items()),
            )
        if isinstance(value, (set, frozenset)):
            return (type(value), frozenset(self.of(v, f"{where} item", depth) for v in value))
        if isinstance(value, types.FunctionType):
            cells = zip(value.__code__.co_freevars, value.__closure__ or (), strict=True)
            closure = tuple(self.of(cell.cell_contents, f"{where} (closure {name!r})", depth) for name, cell in cells)
            return ("function", value, self.of((value.__defaults__, value.__kwdefaults__), where, depth), closure)
        if isinstance(value, types.MethodType):
            owner, declared = value.__self__, getattr(value.__self__, "chain_capture_owner_key", None)
            if declared is not None and id(owner) not in self.modules:
                owned = ("owner", type(owner), id(owner), self.of(declared(), f"{where} (its owner's key)", depth))
            else:
                owned = self.of(owner, f"{where} (its owner)", depth)
            return ("method", value.__func__, owned)
        if isinstance(value, types.BuiltinFunctionType | types.ModuleType):
            return ("identity", id(value))
        if isinstance(value, functools.partial):
            return ("partial", self.of(value.func, where, depth), self.of((value.args, value.keywords), where, depth))
        attributes = getattr(value, "__dict__", None)
        if attributes is None:
            raise Unseen(f"{where} holds a {type(value).__name__}, whose state the key cannot read (no __dict__)")
        if type(value).__basicsize__ > _DICT_ONLY_SIZE:
            raise Unseen(
                f"{where} holds a {type(value).__name__}, whose state lies partly outside its __dict__ (slots or C "
                "state, as random.Random's), which the key cannot read"
            )
        self.objects[id(value)] = value
        state = tuple((n, self.of(v, f"{where}.{n}", depth)) for n, v in attributes.items() if n not in NOT_STATE)
        return ("object", type(value), id(value), state)

    def module(self, root: nn.Module, where: str) -> Hashable:
        """A module's tree (each module of it refused or described once); a module met before: its identity."""
        if id(root) in self.modules:
            return ("module", id(root))
        for module in tree_modules(root, self.modules):  # refused before any is described
            refuse(module)
        return self._tree(root, where)

    def _tree(self, module: nn.Module, where: str) -> Hashable:
        if id(module) in self.modules:
            return ("module", id(module))
        self.modules[id(module)] = module
        stores = (module._parameters, module._buffers)
        held = [(name, t) for store in stores for name, t in store.items() if t is not None]
        self.tensors.update((id(t), t) for _, t in held)
        tensors = tuple((name, tensor_id(t)) for name, t in held)
        # looked up on the instance, then the class: nn.Module's __getattr__ raises for a missing name, slowly
        ignored = module.__dict__.get("chain_capture_ignore", getattr(type(module), "chain_capture_ignore", ()))
        state = tuple(
            (name, value if type(value) in _EXACT_VALUES else self.of(value, f"{where}.{name}"))
            for name, value in module.__dict__.items()
            if name not in NOT_STATE and name not in ignored
        )
        declared = getattr(type(module), "chain_capture_key", None)
        declaration = self.of(declared(module), f"{where}.chain_capture_key()") if declared else None
        children = tuple(
            (name, self._tree(child, f"{where}.{name}")) for name, child in module._modules.items() if child is not None
        )
        return ("module", type(module), id(module), tensors, state, declaration, children)


@dataclass
class ChainCall:
    """One sampler call, as the base class resolved it (``freeze``: the modules the energy reads,
    the energy itself when it is a module)."""

    sampler: CapturableSampler
    energy_fn: Callable[..., Tensor]
    z0: Tensor
    inputs: tuple[Tensor, ...]
    reference_precision: float
    freeze: Sequence[nn.Module]
    generator: torch.Generator | None = None
    record: bool | str = False  # the call's return_diagnostics: False, True or "ends"

    def state_dtype(self) -> torch.dtype:
        """Chains keep float32 states when the start comes in half precision (see ``Sampler``)."""
        return torch.float32 if self.z0.dtype in (torch.float16, torch.bfloat16) else self.z0.dtype


def chain_key(call: ChainCall) -> tuple[Hashable, list[nn.Module]]:
    """``(key, modules)``: everything a graph recorded for ``call`` depends on, and every module
    the chain reads (the ``freeze`` trees, a sampler that is a module, and modules met in the
    energy's closure or owner or in attributes). Raises :class:`RunsEagerly` (or :class:`Unseen`)."""
    described = Description()
    frozen = tuple(described.of(module, type(module).__name__) for module in call.freeze)
    energy = described.of(call.energy_fn, "the energy function")
    key = (
        described.of(call.sampler, type(call.sampler).__name__),
        energy,
        frozen,
        user_code_reads(call.energy_fn, described),
        tensor_signature(call.z0),
        tuple(tensor_signature(t) for t in call.inputs),
        call.reference_precision,
        call.record,
        call.generator is None,
        numerics_state(call.z0.device),
    )
    return key, list(described.modules.values())


def user_code_reads(energy_fn: Callable[..., Tensor], described: Description) -> tuple[Hashable, ...]:
    """What the user's code a chain runs reads outside the objects ``described`` holds (the energy
    function, the class of a bound energy's owner, and every function of the user's classes of the
    modules and objects met), by :mod:`~lebm.recording.code_reads`'s rules.
    Raises :class:`Unseen` for a value the key cannot hold by value."""
    held = [energy_fn] if isinstance(energy_fn, types.FunctionType) else []
    bound = [energy_fn.__func__] if isinstance(energy_fn, types.MethodType) else []
    owners = [type(energy_fn.__self__)] if bound else []
    met = [type(value) for value in (*described.modules.values(), *described.objects.values())]
    classes = [kind for kind in dict.fromkeys([*owners, *met]) if not is_trusted(kind)]
    reads = code_reads(bound, classes, held, described.of)
    outside = first_not_plain(reads)
    if outside is not None:
        raise Unseen(
            f"the chain's code makes {outside.kind} ({outside.where}), which a replay would not make again: keep "
            "what changes on a module (an attribute, or a buffer for a tensor: the key describes both)"
        )
    return reads


def numerics_state(device: torch.device) -> tuple[Hashable, ...]:
    """Autocast and float32-precision settings: a graph runs the kernels they chose at capture."""
    return (
        torch.is_autocast_enabled(device.type),
        torch.get_autocast_dtype(device.type),
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.deterministic,
        torch.are_deterministic_algorithms_enabled(),
    )


def tensor_signature(tensor: Tensor) -> tuple[Hashable, ...]:
    return (tuple(tensor.shape), tensor.dtype, tensor.device)


def why_eager(sampler: CapturableSampler) -> str | None:
    """The reason every chain of ``sampler`` runs eagerly now, or None (cheap: checked first)."""
    if not sampler.capture_allowed():
        return f"{type(sampler).__name__} does not capture (the run's switch, its cuda_graph option or its class)"
    if os.environ.get("CUDA_LAUNCH_BLOCKING", "0") not in ("", "0"):
        return "CUDA_LAUNCH_BLOCKING is set: every launch synchronises, which a CUDA graph capture cannot do"
    if torch.is_anomaly_enabled():
        return "autograd anomaly detection is on: it checks values on the host"
    if any(global_module_hooks().values()):
        return "global module hooks are registered (register_module_*_hook): the key cannot see what they read"
    mode = active_thread_modes()
    if mode is not None:
        return f"{mode}: a replay would not run it"
    return None
