"""What a captured chain depends on: the key under which a graph may be replayed.

A graph replays its recorded kernels on whatever the static buffers and the modules' tensors hold,
with every Python number baked in as it was at recording. So it may serve a call only when
everything else it was recorded from is the same: the sampler's settings, the energy function (and
what its owner and closure hold), shapes and dtypes, autocast and TF32 state, and the modules'
fingerprint (:func:`module_fingerprint`). :meth:`ChainCall.key` puts them together.

**A complete key, or no capture.** Whatever the key cannot see makes the chain run eagerly
(:func:`why_not_captured` names it): a module with forward or backward hooks (a hook can read
anything), a ``SyncBatchNorm`` (its collectives cannot live in a graph), anomaly detection or
``CUDA_LAUNCH_BLOCKING``, and an attribute holding an object the key cannot describe (an object
without ``__dict__``, or one nested deeper than :data:`DESCRIBE_DEPTH`). What the key sees:
every parameter, buffer and tensor attribute by storage, dtype and shape; every scalar attribute,
public or private, by value; lists, tuples, dicts and sets element by element; other objects by
type, identity and their own attributes; functions by identity, defaults and closure; and what a
module's ``chain_capture_key()`` returns. A module names the attributes its forward never reads
(a step counter) in ``chain_capture_ignore``, so that they do not record a new graph at each call.
"""

from __future__ import annotations

import contextvars
import enum
import functools
import os
import types
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.nn.modules import module as module_internals


class CapturableSampler(Protocol):
    """What the key reads of a sampler (``lebm.samplers.Sampler`` has both): whether its chains
    may be captured, and the settings a captured chain depends on. A protocol, so that this module
    imports no sampler."""

    def capture_allowed(self) -> bool: ...

    def capture_settings(self) -> Hashable: ...


#: How deep :func:`describe` follows objects inside attributes before giving up (the chain runs eagerly).
DESCRIBE_DEPTH = 5

_SCALARS = (bool, int, float, complex, str, bytes, type(None))
_PLAIN = frozenset(_SCALARS)
_VALUES = (torch.dtype, torch.device, torch.Size, torch.memory_format, torch.layout, enum.Enum, type)
#: The attributes every ``nn.Module`` has (its hook, parameter, buffer and child dicts): what a
#: fingerprint skips, leaving ``training`` and the attributes a module's own ``__init__`` set.
_MODULE_INTERNALS = frozenset(vars(nn.Module())) - {"training"}
#: lebm's own bookkeeping, which no forward reads: a sampler's captured chains (a
#: ``PersistentChains`` is a module the chain reads) and a part's recorded constructor arguments.
_BOOKKEEPING = frozenset({"_chain_graphs", "_lebm_init_config"})
#: Module attributes described by identity alone: ``nn.Module.compile()``'s compiled call (a pure
#: function of the module's state, whose closure holds the compiler's own objects).
_IDENTITY_ONLY = frozenset({"_compiled_call_impl"})
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


#: Modules the key meets outside the call's ``modules`` (in a closure, on the energy's owner, in a
#: plain list): collected while :meth:`ChainCall.key` runs, so that the eager checks and the
#: warm-up's undo see them too.
_REACHED: contextvars.ContextVar[list[nn.Module] | None] = contextvars.ContextVar("lebm_reached", default=None)


class Unseen(Exception):
    """An attribute the key cannot describe; its message says where."""


def is_sampler(value: Any) -> bool:
    """Whether ``value`` is a sampler (its class has ``capture_settings``): a cheap class lookup."""
    return callable(getattr(type(value), "capture_settings", None)) and not isinstance(value, type)


def hashable(value: Any) -> Hashable:
    """A hashable stand-in for a sampler setting: samplers by their settings, tensors by storage
    and shape, containers element by element, other objects by identity."""
    if is_sampler(value):
        return value.capture_settings()
    if isinstance(value, Tensor):
        return tensor_id(value)
    if isinstance(value, (list, tuple)):
        return tuple(hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), hashable(v)) for k, v in value.items()))
    if value is None or isinstance(value, (bool, int, float, str, torch.dtype, torch.device)):
        return value
    return (type(value), id(value))


def tensor_id(tensor: Tensor) -> Hashable:
    """What a graph holds of a tensor it reads in place: storage address, dtype and shape."""
    return ("tensor", tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tuple(tensor.stride()))


def describe(value: Any, where: str, depth: int = 0, seen: frozenset[int] = frozenset()) -> Hashable:
    """A hashable description of everything in ``value`` a recorded graph may have baked in.

    Scalars and value types by value; tensors by :func:`tensor_id`; containers element by element;
    samplers by their settings; modules (held outside ``_modules``) by identity and their own
    attributes; functions by identity, defaults and closure cells; other objects by type, identity
    and attributes. Raises :class:`Unseen` (naming ``where``) for what it cannot describe.
    """
    if type(value) in _PLAIN or isinstance(value, _VALUES):
        return value
    if isinstance(value, Tensor):
        return tensor_id(value)
    if id(value) in seen:
        return ("cycle", id(value))
    if depth >= DESCRIBE_DEPTH:
        raise Unseen(f"{where} nests objects deeper than {DESCRIBE_DEPTH} levels")
    seen = seen | {id(value)}
    if is_sampler(value):
        return value.capture_settings()
    if isinstance(value, (list, tuple)):
        return (type(value), tuple(describe(v, f"{where}[{i}]", depth + 1, seen) for i, v in enumerate(value)))
    if isinstance(value, (set, frozenset)):
        return (type(value), frozenset(describe(v, f"{where} item", depth + 1, seen) for v in value))
    if isinstance(value, dict):
        items = [
            (describe(k, f"{where} key", depth + 1, seen), describe(v, f"{where}[{k!r}]", depth + 1, seen))
            for k, v in value.items()
        ]
        return (type(value), tuple(items))
    if isinstance(value, (types.FunctionType, types.MethodType, functools.partial)):
        return describe_callable(value, where, depth + 1, seen)
    if isinstance(value, (types.BuiltinFunctionType, types.ModuleType)):
        return ("object", id(value))
    if isinstance(value, nn.Module):  # held outside _modules (in a list, say): its whole tree
        tree = submodules([value])
        reached = _REACHED.get()
        if reached is not None:
            reached.extend(tree)
        return ("module", tuple(module_description(m, where, depth + 1, seen | {id(m)}) for m in tree))
    attributes = getattr(value, "__dict__", None)
    if attributes is None:
        raise Unseen(f"{where} holds a {type(value).__name__}, whose state the key cannot read (no __dict__)")
    state = {name: attribute for name, attribute in attributes.items() if name not in _BOOKKEEPING}
    return ("object", type(value), id(value), describe(state, where, depth + 1, seen))


def describe_callable(function: Any, where: str, depth: int = 0, seen: frozenset[int] = frozenset()) -> Hashable:
    """A function by identity, its defaults and its closure cells; a bound method by its function
    and its owner; a ``functools.partial`` by its function and arguments."""
    if isinstance(function, types.MethodType):
        return ("method", function.__func__, describe(function.__self__, f"{where} (its owner)", depth, seen))
    if isinstance(function, types.FunctionType):
        cells = tuple(
            describe(cell.cell_contents, f"{where} (closure {name!r})", depth, seen)
            for name, cell in zip(function.__code__.co_freevars, function.__closure__ or (), strict=True)
        )
        defaults = describe((function.__defaults__, function.__kwdefaults__), f"{where} (defaults)", depth, seen)
        return ("function", function, defaults, cells)  # the object: the key keeps it alive, no id is reused
    return (
        "partial",
        describe_callable(function.func, where, depth, seen),
        describe((function.args, function.keywords), f"{where} (partial arguments)", depth, seen),
    )


def module_description(module: nn.Module, where: str, depth: int = 0, seen: frozenset[int] = frozenset()) -> Hashable:
    """One module's own state as a graph reads it (not its children): parameters, buffers and
    tensor attributes by :func:`tensor_id`, every other attribute through :func:`describe` except
    those in ``chain_capture_ignore``, and ``chain_capture_key()``."""
    tensors = tuple(
        (name, tensor_id(t))
        for store in (module._parameters, module._buffers)
        for name, t in store.items()
        if t is not None
    )
    ignored = frozenset(getattr(module, "chain_capture_ignore", ()))
    attributes = module.__dict__
    names = sorted(attributes.keys() - _MODULE_INTERNALS - _BOOKKEEPING - ignored)
    own = tuple(
        (
            name,
            ("identity", id(attributes[name]))
            if name in _IDENTITY_ONLY
            else describe(attributes[name], f"{type(module).__name__}.{name}", depth, seen),
        )
        for name in names
    )
    key_of = getattr(type(module), "chain_capture_key", None)
    return (type(module), tensors, own, key_of(module) if key_of else None)


def submodules(modules: Iterable[nn.Module]) -> list[nn.Module]:
    """Every module in the trees of ``modules``, each once, parents before children."""
    seen: set[int] = set()
    found: list[nn.Module] = []
    pending = list(modules)[::-1]
    while pending:
        module = pending.pop()
        if module is None or id(module) in seen:
            continue
        seen.add(id(module))
        found.append(module)
        pending.extend(list(module._modules.values())[::-1])
    return found


def module_fingerprint(modules: Sequence[nn.Module]) -> tuple[Hashable, ...]:
    """What a graph reads from ``modules`` (each a flat list of :func:`submodules`) besides their
    tensors' values (see :func:`module_description`): a ``.to()`` or an assigning load changes
    it, an optimiser step or an in-place load does not. Raises :class:`Unseen`."""
    members = {id(module) for module in modules}
    return tuple(
        (id(module), module_description(module, type(module).__name__, 0, frozenset(members))) for module in modules
    )


def energy_identity(energy_fn: Callable[..., Tensor]) -> tuple[Hashable, Any]:
    """``(identity, object to keep alive)``: a bound method is its object and function (a new
    bound-method object is made at every attribute access), anything else itself."""
    owner = getattr(energy_fn, "__self__", None)
    function = getattr(energy_fn, "__func__", None)
    if owner is not None and function is not None:
        return ("method", id(owner), function), owner
    return ("callable", id(energy_fn)), energy_fn


def energy_description(energy_fn: Callable[..., Tensor], modules: Sequence[nn.Module]) -> Hashable:
    """What the energy function itself brings besides ``modules``: for a bound method, its owner's
    attributes (an owner that is one of ``modules`` is in the fingerprint already; an owner
    defining ``chain_capture_owner_key()`` gives that instead); for a function, its defaults and
    closure. Raises :class:`Unseen`."""
    members = frozenset(id(module) for module in modules)
    owner = getattr(energy_fn, "__self__", None)
    if owner is not None and getattr(energy_fn, "__func__", None) is not None:
        if id(owner) in members:
            return ("owner in modules",)
        owner_key = getattr(owner, "chain_capture_owner_key", None)
        if owner_key is not None:
            return ("owner key", owner_key())
        if isinstance(owner, nn.Module):
            return module_description(owner, f"{type(owner).__name__} (the energy's owner)", 0, members)
        return describe(owner, f"{type(owner).__name__} (the energy's owner)", 0, members)
    if isinstance(energy_fn, nn.Module):
        return ("module energy",)
    return describe_callable(energy_fn, "the energy function", 0, members) if callable(energy_fn) else ()


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


def has_hooks(module: nn.Module) -> bool:
    return any(getattr(module, name, None) for name in _HOOK_DICTS)


def global_hooks() -> bool:
    """Whether forward or backward hooks are registered for every module (``register_module_forward_hook``)."""
    names = (
        "_global_forward_hooks",
        "_global_forward_pre_hooks",
        "_global_backward_hooks",
        "_global_backward_pre_hooks",
    )
    return any(getattr(module_internals, name, None) for name in names)


def why_not_captured(sampler: CapturableSampler, modules: Sequence[nn.Module]) -> str | None:
    """The reason a declared chain runs eagerly, or None when it may be captured (``modules``: a
    flat list of :func:`submodules`). Cheap checks only: what the key cannot describe is found
    by :meth:`ChainCall.key` (:class:`Unseen`)."""
    if not sampler.capture_allowed():
        return (
            f"{type(sampler).__name__} does not capture (the run's chain capture switch is off, its cuda_graph "
            "option is off, or it did not opt in)"
        )
    if os.environ.get("CUDA_LAUNCH_BLOCKING", "0") not in ("", "0"):
        return "CUDA_LAUNCH_BLOCKING is set: every launch synchronises, which a CUDA graph capture cannot do"
    if torch.is_anomaly_enabled():
        return "autograd anomaly detection is on (torch.autograd.set_detect_anomaly): it checks values on the host"
    if global_hooks():
        return (
            "global module hooks are registered (torch.nn.modules.module.register_module_*_hook): the key cannot "
            "see what they read"
        )
    for module in modules:
        name = type(module).__name__
        if isinstance(module, nn.RNNBase):
            return f"the energy reads a recurrent net ({name}), which lebm does not capture"
        if isinstance(module, nn.SyncBatchNorm):
            return f"the energy reads a SyncBatchNorm ({name}): its collectives cannot be recorded in a CUDA graph"
        if module.__dict__.get("chain_capture", getattr(type(module), "chain_capture", True)) is False:
            return f"{name} declares chain_capture = False"
        if has_hooks(module):
            return (
                f"{name} has forward or backward hooks (e.g. the hook-style torch.nn.utils.spectral_norm): the key "
                "cannot see what a hook reads; use torch.nn.utils.parametrizations.spectral_norm"
            )
    return None


@dataclass
class ChainCall:
    """One sampler call, as the base class resolved it: what the chain runs and reads
    (``modules``: every module the energy reads, as a flat list of :func:`submodules`)."""

    sampler: CapturableSampler
    energy_fn: Callable[..., Tensor]
    z0: Tensor
    inputs: tuple[Tensor, ...]
    reference_precision: float
    modules: list[nn.Module]
    generator: torch.Generator | None = None
    record: bool | str = False  # the call's return_diagnostics: False, True or "ends"
    reached: list[nn.Module] = field(default_factory=list)

    def key(self) -> Hashable:
        """Everything a graph recorded for this call depends on. Raises :class:`Unseen` when
        something the chain may read cannot be described (the chain then runs eagerly). Modules
        met outside ``modules`` are left in :attr:`reached`."""
        reached: list[nn.Module] = []
        token = _REACHED.set(reached)
        try:
            return self._key()
        finally:
            _REACHED.reset(token)
            members = {id(module) for module in self.modules}
            self.reached = [m for m in dict.fromkeys(reached) if id(m) not in members]

    def _key(self) -> Hashable:
        identity, _ = energy_identity(self.energy_fn)
        return (
            self.sampler.capture_settings(),
            identity,
            energy_description(self.energy_fn, self.modules),
            tensor_signature(self.z0),
            tuple(tensor_signature(t) for t in self.inputs),
            self.reference_precision,
            self.record,
            self.generator is None,
            numerics_state(self.z0.device),
            module_fingerprint(self.modules),
        )

    def state_dtype(self) -> torch.dtype:
        """Chains keep float32 states when the start comes in half precision (see ``Sampler``)."""
        return torch.float32 if self.z0.dtype in (torch.float16, torch.bfloat16) else self.z0.dtype
