"""Operations a CUDA graph cannot record, and a thread-local check that refuses them.

A captured chain may not synchronise with the host (``.item()``, ``float(t)``, ``if t:``, a copy
to the CPU) nor size a tensor by its values (``nonzero``, ``x[mask]``, ``unique``): a CUDA
recording fails on either. :func:`uncapturable` names them at the level of aten operations;
:class:`RefuseHostSync` runs a body under a dispatch mode that raises :class:`HostSynchronisation`
at the first one. The mode is thread-local, unlike CUDA's sync debug mode
(``torch.cuda.set_sync_debug_mode``), which is process-wide and would also fail the
synchronisations of other threads (an asynchronous checkpoint writer, a logger) while a chain warms up.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lebm.recording.torch_internals import TorchDispatchMode, leaves_of

#: Operations (schema names) that read a tensor's value on the host or size their output by it.
UNCAPTURABLE_OPS = frozenset(
    {
        "aten::_local_scalar_dense",  # .item(), float(t), int(t), printing a tensor
        "aten::is_nonzero",  # if t:, bool(t)
        "aten::equal",
        "aten::allclose",
        "aten::nonzero",
        "aten::masked_select",
        "aten::_unique",
        "aten::_unique2",
        "aten::unique_dim",
        "aten::unique_consecutive",
        "aten::unique_dim_consecutive",
        "aten::_linalg_check_errors",  # linalg.cholesky, inv, solve ... read their error codes on the host
        "aten::bincount",  # sizes its output by the largest value
    }
)
_MASK_INDEXED_OPS = frozenset({"aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_"})


def uncapturable(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether ``func(*args, **kwargs)`` synchronises with the host or has a data-dependent shape:
    the :data:`UNCAPTURABLE_OPS`, indexing with a boolean mask (``x[mask]``, ``x[mask] = v``),
    ``repeat_interleave`` with tensor repeats and no ``output_size``, and ``histc`` without a range.
    These are CUDA's synchronisations that show at the level of aten operations on any device, so
    a CPU test sees them too; a synchronisation hidden inside a kernel library is not listed, and
    fails the recording instead (the chain then runs eagerly, with a warning)."""
    name = func._schema.name
    if name in UNCAPTURABLE_OPS:
        return True
    if name in _MASK_INDEXED_OPS:
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        return any(isinstance(i, Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices)
    if name == "aten::repeat_interleave":
        return func._overloadname in ("Tensor", "self_Tensor") and kwargs.get("output_size") is None
    if name == "aten::histc":  # without a range it reads the data's minimum and maximum on the host
        low = args[2] if len(args) > 2 else kwargs.get("min", 0)
        high = args[3] if len(args) > 3 else kwargs.get("max", 0)
        return low == high
    return False


def copies_to_the_host(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> bool:
    """Whether the operation moved data from a CUDA tensor into a CPU tensor (``.cpu()``, ``.to("cpu")``,
    ``cpu_tensor.copy_(cuda_tensor)``): a synchronisation on a GPU, nothing on the CPU."""
    inputs = [t for t in leaves_of((args, kwargs)) if isinstance(t, Tensor)]
    if not any(t.is_cuda for t in inputs):
        return False
    outputs = [t for t in leaves_of(out) if isinstance(t, Tensor)]
    return any(t.device.type == "cpu" for t in outputs)


class HostSynchronisation(RuntimeError):
    """A chain body ran an operation a CUDA graph cannot record."""


class RefuseHostSync(TorchDispatchMode):
    """Within this mode (this thread only), an operation that synchronises with the host or has a
    data-dependent output shape raises :class:`HostSynchronisation` naming it."""

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if uncapturable(func, args, kwargs):
            raise HostSynchronisation(f"{func}: a host synchronisation or a data-dependent shape")
        out = func(*args, **kwargs)
        if copies_to_the_host(func, args, kwargs, out):
            raise HostSynchronisation(f"{func}: a copy from the GPU to the host")
        return out
