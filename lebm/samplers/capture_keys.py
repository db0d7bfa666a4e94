"""What a captured chain depends on: the key under which a graph may be replayed.

A graph replays its recorded kernels on whatever the static buffers and the modules' tensors hold,
so it may serve a call only when everything else it was recorded from is the same: the sampler's
settings, the energy function, shapes and dtypes, autocast and TF32 state, and the modules'
fingerprint (:func:`module_fingerprint`). :meth:`ChainCall.key` puts them together;
:func:`why_not_captured` names what keeps a declared chain eager.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from lebm.samplers.base import Sampler


def hashable(value: Any) -> Hashable:
    """A hashable stand-in for a setting: samplers by their settings, tensors by storage and
    shape, containers element by element, other objects by identity."""
    from lebm.samplers.base import Sampler

    if isinstance(value, Sampler):
        return value.capture_settings()
    if isinstance(value, Tensor):
        return ("tensor", value.data_ptr(), value.dtype, tuple(value.shape))
    if isinstance(value, (list, tuple)):
        return tuple(hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), hashable(v)) for k, v in value.items()))
    if value is None or isinstance(value, (bool, int, float, str, torch.dtype, torch.device)):
        return value
    return (type(value), id(value))


_SCALARS = (bool, int, float, str, type(None))
#: The attributes every ``nn.Module`` has (its hook, parameter, buffer and child dicts): what a
#: fingerprint skips, leaving ``training`` and the attributes a module's own ``__init__`` set.
_MODULE_INTERNALS = frozenset(vars(nn.Module())) - {"training"}


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
    tensors' values: each module's parameters, buffers and tensor attributes (storage address,
    dtype, shape: a ``.to()`` or an assigning load changes them, an optimiser step or an in-place
    load does not), its public scalar attributes (``training``, a decoder's ``sigma``, ...) and
    what its ``chain_capture_key()`` returns."""
    parts: list[Hashable] = []
    for module in modules:
        tensors = [
            (name, t.data_ptr(), t.dtype, t.shape)
            for store in (module._parameters, module._buffers)
            for name, t in store.items()
            if t is not None
        ]
        attributes = module.__dict__
        scalars = []
        for name in sorted(attributes.keys() - _MODULE_INTERNALS):
            value = attributes[name]
            if isinstance(value, Tensor):
                tensors.append((name, value.data_ptr(), value.dtype, value.shape))
            elif isinstance(value, _SCALARS) and not name.startswith("_"):
                scalars.append((name, value))
        key_of = getattr(type(module), "chain_capture_key", None)
        parts.append((id(module), type(module), tuple(tensors), tuple(scalars), key_of(module) if key_of else None))
    return tuple(parts)


def energy_identity(energy_fn: Callable[..., Tensor]) -> tuple[Hashable, Any]:
    """``(identity, object to keep alive)``: a bound method is its object and function (a new
    bound-method object is made at every attribute access), anything else itself."""
    owner = getattr(energy_fn, "__self__", None)
    function = getattr(energy_fn, "__func__", None)
    if owner is not None and function is not None:
        return ("method", id(owner), function), owner
    return ("callable", id(energy_fn)), energy_fn


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


def why_not_captured(sampler: Sampler, modules: Sequence[nn.Module]) -> str | None:
    """The reason a declared chain runs eagerly, or None when it may be captured (``modules``: a
    flat list of :func:`submodules`)."""
    if not sampler.capture_allowed():
        return f"{type(sampler).__name__} does not capture (its cuda_graph option is off, or it did not opt in)"
    for module in modules:
        if isinstance(module, nn.RNNBase):
            return f"the energy reads a recurrent net ({type(module).__name__}), which lebm does not capture"
        if module.__dict__.get("chain_capture", getattr(type(module), "chain_capture", True)) is False:
            return f"{type(module).__name__} declares chain_capture = False"
    return None


@dataclass
class ChainCall:
    """One sampler call, as the base class resolved it: what the chain runs and reads
    (``modules``: every module the energy reads, as a flat list of :func:`submodules`)."""

    sampler: Sampler
    energy_fn: Callable[..., Tensor]
    z0: Tensor
    inputs: tuple[Tensor, ...]
    reference_precision: float
    modules: list[nn.Module]
    generator: torch.Generator | None = None
    record: bool = False

    def key(self) -> Hashable:
        identity, _ = energy_identity(self.energy_fn)
        return (
            self.sampler.capture_settings(),
            identity,
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
