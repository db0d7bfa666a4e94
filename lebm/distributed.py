"""Multi-process training of lebm methods on Lightning's DDP engine.

Every method steps several optimisers, each on a loss that reaches one net. Lightning's plain DDP
would all-reduce *every* net at *every* backward pass (and needs ``find_unused_parameters`` to
do so), and would broadcast rank 0's buffers over the rank-local ones (persistent chains) at
every forward. :class:`MethodDDPStrategy` is Lightning's ``DDPStrategy`` (same launchers, cluster
environments, samplers and collectives; torchrun and SLURM work unchanged) that leaves the model
unwrapped: the method reduces each optimiser's gradients once, just before that optimiser steps
(:func:`reduce_gradients`), so the bytes sent per iteration are the size of the nets it updates.

Names for ``Trainer(strategy=...)``: ``"lebm_ddp"`` (one process per device, launched by
re-running the command, as ``"ddp"``) and ``"lebm_ddp_spawn"`` (``"ddp_spawn"``'s launcher). The
``lebm`` CLI picks ``lebm_ddp`` whenever more than one process is requested and no strategy is
named, and maps ``ddp``/``ddp_spawn`` to these.

Rank-local state: a module lists its rank-local buffers in ``rank_local_buffers``; they are not
broadcast at start-up, and methods keep every rank's copy in their checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry
from torch import Tensor, nn


def rank_local_buffer_names(module: nn.Module) -> list[str]:
    """Qualified names of the buffers that submodules declare rank-local (``rank_local_buffers``)."""
    names = []
    for prefix, sub in module.named_modules():
        for buffer in getattr(sub, "rank_local_buffers", ()):
            names.append(f"{prefix}.{buffer}" if prefix else buffer)
    return names


def broadcast_module_state(module: nn.Module, skip: Iterable[str] = (), src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers (except the ``skip`` buffers) to every rank, so
    that all ranks start from the same model whatever their seeds."""
    skipped = set(skip)
    tensors = [p.data for p in module.parameters()]
    tensors += [b for name, b in module.named_buffers() if name not in skipped]
    for tensor in tensors:
        dist.broadcast(tensor, src)


def reduce_gradients(parameters: Iterable[Tensor]) -> None:
    """Average the gradients of ``parameters`` over all processes, in one all-reduce per dtype.

    Every rank must pass the same parameters with gradients present (each optimiser's loss reaches
    the same parameters on every rank: true for every lebm method).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world_size = dist.get_world_size()
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for parameter in parameters:
        if parameter.grad is not None:
            by_dtype.setdefault(parameter.grad.dtype, []).append(parameter.grad)
    for grads in by_dtype.values():
        flat = torch.cat([grad.reshape(-1) for grad in grads])
        dist.all_reduce(flat)
        flat.div_(world_size)
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()


class MethodDDPStrategy(DDPStrategy):
    """Lightning's DDP for lebm methods: no ``DistributedDataParallel`` wrapper, gradients reduced
    per optimiser step by the method, rank-local buffers left alone (see the module docstring).

    Accepts every ``DDPStrategy`` argument (launcher ``start_method``, process-group backend and
    timeout, cluster environment); DDP-wrapper options (``find_unused_parameters``, comm hooks)
    do not apply.
    """

    def configure_ddp(self) -> None:
        """Instead of wrapping the model: give every rank rank 0's parameters and shared buffers."""
        assert self.model is not None
        broadcast_module_state(self.model, skip=rank_local_buffer_names(self.model))

    @staticmethod
    def reduce_gradients(parameters: Iterable[Tensor]) -> None:
        """Average ``parameters``' gradients over the processes (:func:`reduce_gradients`)."""
        reduce_gradients(parameters)


StrategyRegistry.register(
    "lebm_ddp",
    MethodDDPStrategy,
    description="DDP for lebm methods (per-optimiser gradient reduction)",
    start_method="popen",
    override=True,
)
StrategyRegistry.register(
    "lebm_ddp_spawn",
    MethodDDPStrategy,
    description="DDP for lebm methods, spawned processes",
    start_method="spawn",
    override=True,
)
