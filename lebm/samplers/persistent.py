"""Persistent chains: a replay buffer of chain states around any sampler."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lebm import arguments
from lebm.samplers.base import Sampler
from lebm.samplers.chain import ChainTarget, per_chain

#: Why a chain setting has an upper bound.
_FLOAT32 = "float32 chain states overflow above 3.4e38"


class PersistentChains(Sampler, nn.Module):
    """Continue chains from a buffer of past states instead of from fresh noise.

    Call contract as every sampler: ``chains(energy_fn, z0) -> z``. The fresh states ``z0``
    ``(B, *shape)`` fix the batch size and serve as re-initialisations: each of the B chains
    drawn from the buffer restarts from its row of ``z0`` with probability ``reinit_prob``.
    The B chains run ``sampler`` and are written back to the buffer. Every draw (which chains,
    which restart) comes from the call's ``generator``.

    The buffer ``chains`` ``(buffer_size, *shape)`` is a registered buffer, so it is saved in
    checkpoints with the module that owns this sampler. It is **rank-local** under DDP
    (``rank_local_buffers``): each rank keeps and evolves its own chains, a method's checkpoint
    keeps every rank's buffer, and a new run redraws each rank's buffer from that rank's stream
    (:meth:`reset_rank_local_state`).

    Args:
        sampler: the transition run on each drawn batch (e.g. ``Langevin``).
        shape: the shape of one state, e.g. ``[100]`` for a 100-d latent.
        buffer_size: number of stored chains.
        reinit_prob: probability that a drawn chain restarts from ``z0``.
        init_std: the buffer starts as ``N(0, init_std^2 I)`` samples.
        cuda_graph: on a CUDA device, capture the whole call (the draws from the buffer, the
            wrapped sampler's steps and the write-back) as one CUDA graph when ``sampler`` allows
            capture too (:mod:`lebm.recording.cache`); False runs it eagerly.
    """

    capturable = True
    chains: Tensor
    rank_local_buffers = ("chains",)

    def __init__(
        self,
        sampler: Sampler,
        shape: Sequence[int],
        buffer_size: int = 10000,
        reinit_prob: float = 0.05,
        init_std: float = 1.0,
        cuda_graph: bool = True,
    ) -> None:
        super().__init__()
        self.reinit_prob = arguments.number("PersistentChains", "reinit_prob", reinit_prob, at_least=0, at_most=1)
        buffer_size = arguments.whole("PersistentChains", "buffer_size", buffer_size, at_least=1)
        if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
            shape = [shape]  # type: ignore[list-item]
        shape = [arguments.whole("PersistentChains", "shape (each size)", size, at_least=1) for size in shape]
        self.init_std = arguments.number(
            "PersistentChains", "init_std", init_std, at_least=0, at_most=arguments.FLOAT32_MAX, why_at_most=_FLOAT32
        )
        self.cuda_graph = arguments.flag("PersistentChains", "cuda_graph", cuda_graph)
        if not isinstance(sampler, Sampler):
            raise TypeError(f"PersistentChains needs a Sampler to run its chains, got {type(sampler).__name__}")
        self.sampler = sampler
        self.register_buffer("chains", torch.randn(buffer_size, *shape) * init_std)

    def capture_allowed(self) -> bool:
        """Captured only when the wrapped sampler's steps may be captured too."""
        return super().capture_allowed() and self.sampler.capture_allowed()

    def opted_in(self) -> bool:
        """Opted in only when the wrapped sampler opted in too."""
        return super().opted_in() and self.sampler.opted_in()

    def current_step_size(self) -> float:
        """The step size of the wrapped sampler."""
        return self.sampler.current_step_size()

    def scale_step_size(self, factor: float) -> float:
        """Scale the step size of the wrapped sampler (the chains' transition)."""
        return self.sampler.scale_step_size(factor)

    def prepare(self, z0: Tensor) -> None:
        """Let the wrapped sampler prepare for the drawn batch (it has ``z0``'s shape)."""
        self.sampler.prepare(z0)

    def reset_rank_local_state(self, generator: torch.Generator | None = None) -> None:
        """Redraw the buffer ``N(0, init_std^2 I)`` from ``generator`` (each rank's own stream)."""
        noise = torch.randn(self.chains.shape, generator=generator, device=self.chains.device, dtype=self.chains.dtype)
        self.chains.copy_(noise * self.init_std)

    def run(self, target: ChainTarget, z: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``B = len(z)`` chains from the buffer (restarting each from ``z`` with
        probability ``reinit_prob``), run ``sampler`` on them and write them back."""
        if z.shape[1:] != self.chains.shape[1:]:
            raise ValueError(
                f"PersistentChains holds states of shape {tuple(self.chains.shape[1:])} but got "
                f"z0 of shape {tuple(z.shape[1:])}: set `shape` to the latent shape"
            )
        chains = self.chains.to(device=z.device, dtype=z.dtype)
        index = torch.randint(len(chains), (z.shape[0],), device=z.device, generator=generator)
        restart = torch.rand(z.shape[0], device=z.device, generator=generator) < self.reinit_prob
        start = torch.where(per_chain(restart, z), z, chains[index])
        moved = self.sampler.run(target, start, generator=generator)
        self.chains[index] = moved.detach().to(self.chains.dtype)
        return moved

    __repr__ = nn.Module.__repr__

    def extra_repr(self) -> str:
        return f"sampler={self.sampler!r}, buffer={tuple(self.chains.shape)}, reinit_prob={self.reinit_prob}"
