"""The one seam between lebm's fast paths and torch's private names.

Captured chains and recorded iterations must see what torch keeps in private places: a tensor's
in-place version counter, the hooks registered on tensors, modules and optimisers (per object and
process-wide), the pytree helpers that flatten a batch, the dispatch mode that watches aten
operations, the allocator call that ends a failed capture's pool, and the module class of a
spectral-norm parametrization. Every use goes through this
module, and nowhere else in lebm: a torch upgrade that renames or removes one of them fails
:func:`missing_internals` (``tests/recording/test_torch_internals.py``) loudly, instead of silently
turning a check off (a renamed dict of global hooks read with a default would look like "no hooks").

Each accessor reads its name strictly: a missing name raises :class:`TorchInternalsChanged`, naming
it and the torch version, wherever it is met.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.optim.optimizer as optimizer_internals
from torch import Tensor, nn
from torch.nn.modules import module as module_internals
from torch.nn.utils import parametrizations
from torch.nn.utils.spectral_norm import SpectralNorm as SpectralNormHook
from torch.utils import _python_dispatch, _pytree

#: A module's own hook dictionaries that run inside its forward or backward pass.
MODULE_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
#: ``torch.nn.modules.module``'s process-wide hooks that run inside every module's forward or backward.
GLOBAL_MODULE_HOOKS = tuple(f"_global{name}" for name in MODULE_HOOKS) + (
    "_global_forward_hooks_always_called",
    "_global_forward_hooks_with_kwargs",
)
#: ``torch.optim.optimizer``'s process-wide hooks that run around every optimiser's step.
GLOBAL_OPTIMIZER_HOOKS = ("_global_optimizer_pre_hooks", "_global_optimizer_post_hooks")
#: An optimiser's own step hooks.
OPTIMIZER_HOOKS = ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks")
#: A tensor's hooks that run when autograd reaches it (``register_hook``, ``register_post_accumulate_grad_hook``).
TENSOR_HOOKS = ("_backward_hooks", "_post_accumulate_grad_hooks")

#: The pytree helpers (``tree_flatten``, ``tree_unflatten``, ``tree_leaves``, ``tree_map``).
tree_flatten = _pytree.tree_flatten
tree_unflatten = _pytree.tree_unflatten
tree_leaves = _pytree.tree_leaves
tree_map = _pytree.tree_map
#: The base class of a mode that sees every aten operation run under it.
TorchDispatchMode = _python_dispatch.TorchDispatchMode

#: Values the pytree helpers treat as leaves that an aten operation's arguments and results hold.
_PLAIN_LEAVES = (
    Tensor,
    int,
    float,
    complex,
    str,
    type(None),
    torch.dtype,
    torch.device,
    torch.layout,
    torch.memory_format,
)


def leaves_of(value: Any, into: list[Any] | None = None) -> list[Any]:
    """``tree_leaves(value)``, the same leaves in the same order, with plain lists, tuples and dicts
    (an aten operation's arguments and results) walked here, in a few Python calls where
    ``tree_leaves`` makes many: the dispatch modes that watch chains walk every operation. Any
    other container (a ``torch.Size``, a named tuple of results) goes to ``tree_leaves``."""
    found: list[Any] = [] if into is None else into
    kind = type(value)
    if kind is list or kind is tuple:
        for item in value:
            leaves_of(item, found)
    elif kind is dict:
        for item in value.values():
            leaves_of(item, found)
    elif isinstance(value, _PLAIN_LEAVES):
        found.append(value)
    else:
        found.extend(tree_leaves(value))
    return found


def map_leaves(function: Callable[[Any], Any], value: Any) -> Any:
    """``tree_map(function, value)``, the same result, with plain lists, tuples and dicts rebuilt
    here (see :func:`leaves_of`); any other container goes to ``tree_map``."""
    kind = type(value)
    if kind is list:
        return [map_leaves(function, item) for item in value]
    if kind is tuple:
        return tuple(map_leaves(function, item) for item in value)
    if kind is dict:
        return {key: map_leaves(function, item) for key, item in value.items()}
    if isinstance(value, _PLAIN_LEAVES):
        return function(value)
    return tree_map(function, value)


class TorchInternalsChanged(RuntimeError):
    """A private torch name lebm's fast paths read is gone or changed: this torch is not one lebm knows."""


def _read(owner: Any, name: str, where: str) -> Any:
    try:
        return getattr(owner, name)
    except AttributeError:
        raise TorchInternalsChanged(
            f"torch {torch.__version__} has no {where}.{name}, which lebm's captured chains and recorded iterations "
            "read: this torch is newer than lebm knows. Turn recorded iterations off (-c "
            "recipes/speed/eager_iterations.yaml) and chain capture off (-c recipes/speed/eager_chains.yaml), or "
            "install the torch of constraints.txt"
        ) from None


def tensor_version(tensor: Tensor) -> int:
    """How many times ``tensor`` was written in place (autograd's version counter)."""
    return int(_read(tensor, "_version", "Tensor"))


def tensor_has_hooks(tensor: Tensor) -> bool:
    """Whether a hook is registered on ``tensor`` (``register_hook``, ``register_post_accumulate_grad_hook``)."""
    return any(bool(_read(tensor, name, "Tensor")) for name in TENSOR_HOOKS)


def module_hooks(module: nn.Module) -> dict[str, Mapping[Any, Any]]:
    """``module``'s own forward and backward hook dictionaries, by name (each possibly empty)."""
    return {name: module.__dict__.get(name) or {} for name in MODULE_HOOKS}


def has_module_hooks(module: nn.Module) -> bool:
    """Whether ``module`` has a forward or backward hook of its own (:func:`module_hooks`, without
    building the dictionary: checked for every module of every key)."""
    state = module.__dict__
    return any(state.get(name) for name in MODULE_HOOKS)


def is_spectral_normed(module: nn.Module) -> bool:
    """Whether ``module`` normalises a weight by its spectral norm, estimated by power iteration:
    the parametrization (``torch.nn.utils.parametrizations.spectral_norm``, whose module class,
    ``_SpectralNorm``, is private) or the older forward pre-hook (``torch.nn.utils.spectral_norm``)."""
    if isinstance(module, _read(parametrizations, "_SpectralNorm", "torch.nn.utils.parametrizations")):
        return True
    return any(isinstance(hook, SpectralNormHook) for hook in module_hooks(module)["_forward_pre_hooks"].values())


def global_module_hooks() -> dict[str, Mapping[Any, Any]]:
    """The process-wide module hooks (``register_module_forward_hook`` ...), by name."""
    return {name: _read(module_internals, name, "torch.nn.modules.module") for name in GLOBAL_MODULE_HOOKS}


def global_optimizer_hooks() -> dict[str, Mapping[Any, Any]]:
    """The process-wide optimiser step hooks (``register_optimizer_step_pre_hook`` ...), by name."""
    return {name: _read(optimizer_internals, name, "torch.optim.optimizer") for name in GLOBAL_OPTIMIZER_HOOKS}


def optimizer_hooks(optimizer: torch.optim.Optimizer) -> dict[str, Mapping[Any, Any]]:
    """``optimizer``'s own step hooks (``register_step_pre_hook`` ...), by name."""
    return {name: _read(optimizer, name, "Optimizer") for name in OPTIMIZER_HOOKS}


def module_stores(module: nn.Module) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``module``'s own parameter, buffer and child dictionaries (``_parameters``, ``_buffers``,
    ``_modules``): the containers a key's stamp holds by identity."""
    return (
        _read(module, "_parameters", "Module"),
        _read(module, "_buffers", "Module"),
        _read(module, "_modules", "Module"),
    )


def active_thread_modes() -> str | None:
    """The first of this thread's torch-wide interceptions that is active, named (None: none): a
    ``TorchFunctionMode`` or ``TorchDispatchMode`` entered, or autograd's saved-tensor hooks
    (``torch.autograd.graph.saved_tensors_hooks``). A recorded iteration replays none of them."""
    if _read(torch._C, "_len_torch_function_stack", "torch._C")():
        return "a TorchFunctionMode is active (torch.overrides)"
    if _read(torch._C, "_len_torch_dispatch_stack", "torch._C")():
        return "a TorchDispatchMode is active (torch.utils._python_dispatch)"
    if _read(torch._C._autograd, "_top_saved_tensors_default_hooks", "torch._C._autograd")(False) is not None:
        return "autograd's saved-tensor hooks are set (torch.autograd.graph.saved_tensors_hooks)"
    return None


def end_allocating_to_pool() -> Callable[[int, Any], None]:
    """torch's call that stops routing a device's allocations to a graph's pool (after a failed capture)."""
    return _read(torch._C, "_cuda_endAllocateToPool", "torch._C")


def missing_internals() -> list[str]:
    """Every private name above that this torch lacks or holds in another form (empty: all as lebm
    expects them). ``_cuda_endAllocateToPool`` is checked where torch was built with CUDA."""
    problems: list[str] = []
    for owner, where, name in (
        (torch._C, "torch._C", "_len_torch_function_stack"),
        (torch._C, "torch._C", "_len_torch_dispatch_stack"),
        (torch._C._autograd, "torch._C._autograd", "_top_saved_tensors_default_hooks"),
    ):
        if not callable(getattr(owner, name, None)):
            problems.append(f"{where}.{name} is gone")
    for owner, where, names in (
        (module_internals, "torch.nn.modules.module", GLOBAL_MODULE_HOOKS),
        (optimizer_internals, "torch.optim.optimizer", GLOBAL_OPTIMIZER_HOOKS),
    ):
        for name in names:
            if not isinstance(getattr(owner, name, None), dict):
                problems.append(f"{where}.{name} is not a dict of hooks")
    probe = nn.Parameter(torch.zeros(1))
    for name in TENSOR_HOOKS:
        if not hasattr(probe, name):
            problems.append(f"Tensor.{name} is gone")
    handle = probe.register_hook(lambda grad: grad)
    if not probe._backward_hooks:  # the dict a registered hook lands in
        problems.append("Tensor.register_hook no longer fills Tensor._backward_hooks")
    handle.remove()
    version = getattr(probe, "_version", None)
    with torch.no_grad():
        probe.add_(1)
    if not isinstance(version, int) or getattr(probe, "_version", None) != version + 1:
        problems.append("Tensor._version no longer counts in-place writes")
    linear = nn.Linear(1, 1)
    for name in MODULE_HOOKS:
        if not isinstance(linear.__dict__.get(name), dict):
            problems.append(f"nn.Module.{name} is not a dict of hooks")
    with contextlib.suppress(Exception):  # a missing name is reported above
        handle = linear.register_forward_hook(lambda *args: None)
        if not linear.__dict__.get("_forward_hooks"):
            problems.append("nn.Module.register_forward_hook no longer fills _forward_hooks")
        handle.remove()
    adam = torch.optim.Adam(linear.parameters())
    for name in OPTIMIZER_HOOKS:
        if not isinstance(getattr(adam, name, None), dict):
            problems.append(f"Optimizer.{name} is not a dict of hooks")
    with contextlib.suppress(Exception):  # a missing name is reported above
        handle = optimizer_internals.register_optimizer_step_post_hook(lambda *args: None)
        if not optimizer_internals.__dict__.get("_global_optimizer_post_hooks"):
            problems.append("register_optimizer_step_post_hook no longer fills _global_optimizer_post_hooks")
        handle.remove()
    leaves, spec = tree_flatten(({"x": torch.zeros(1)}, [1]))
    if len(leaves) != 2 or tree_unflatten(leaves, spec)[1] != [1]:
        problems.append("torch.utils._pytree's tree_flatten/tree_unflatten changed")
    if not isinstance(TorchDispatchMode, type) or not hasattr(TorchDispatchMode, "__torch_dispatch__"):
        problems.append("torch.utils._python_dispatch.TorchDispatchMode changed")
    if not isinstance(getattr(parametrizations, "_SpectralNorm", None), type):
        problems.append("torch.nn.utils.parametrizations._SpectralNorm is gone")
    if torch.backends.cuda.is_built() and not callable(getattr(torch._C, "_cuda_endAllocateToPool", None)):
        problems.append("torch._C._cuda_endAllocateToPool is gone")
    return problems
