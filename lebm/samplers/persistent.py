"""Persistent chains: a replay buffer of chain states around any sampler."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from lebm.samplers.base import EnergyFn, Sampler, SamplerOutput


class PersistentChains(nn.Module, Sampler):
    """Continue chains from a buffer of past states instead of from fresh noise.

    Call contract as every sampler: ``chains(energy_fn, z0) -> z``. The fresh states ``z0``
    ``(B, *shape)`` fix the batch size and serve as re-initialisations: each of the B chains
    drawn from the buffer restarts from its row of ``z0`` with probability ``reinit_prob``.
    The B chains run ``sampler`` and are written back to the buffer.

    The buffer ``chains`` ``(buffer_size, *shape)`` is a registered buffer, so it is saved in
    checkpoints with the module that owns this sampler. Under DDP each rank keeps its own
    buffer (rank-local chains); the checkpoint holds rank 0's.

    Args:
        sampler: the transition run on each drawn batch (e.g. ``Langevin``).
        shape: the shape of one state, e.g. ``[100]`` for a 100-d latent.
        buffer_size: number of stored chains.
        reinit_prob: probability that a drawn chain restarts from ``z0``.
        init_std: the buffer starts as ``N(0, init_std^2 I)`` samples.
    """

    chains: Tensor

    def __init__(
        self,
        sampler: Sampler,
        shape: Sequence[int],
        buffer_size: int = 10000,
        reinit_prob: float = 0.05,
        init_std: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= reinit_prob <= 1.0:
            raise ValueError(f"PersistentChains reinit_prob must be in [0, 1], got {reinit_prob}")
        if buffer_size < 1:
            raise ValueError(f"PersistentChains buffer_size must be >= 1, got {buffer_size}")
        self.sampler = sampler
        self.reinit_prob = float(reinit_prob)
        self.register_buffer("chains", torch.randn(buffer_size, *shape) * init_std)

    def __call__(  # type: ignore[override]
        self,
        energy_fn: EnergyFn,
        z0: Tensor,
        *,
        reference_precision: float = 0.0,
        freeze: Iterable[nn.Module] = (),
        generator: torch.Generator | None = None,
        return_diagnostics: bool = False,
    ) -> SamplerOutput:
        if z0.shape[1:] != self.chains.shape[1:]:
            raise ValueError(
                f"PersistentChains holds states of shape {tuple(self.chains.shape[1:])} but got "
                f"z0 of shape {tuple(z0.shape[1:])}: set `shape` to the latent shape"
            )
        chains = self.chains.to(device=z0.device, dtype=z0.dtype)
        index = torch.randint(len(chains), (z0.shape[0],), device=z0.device, generator=generator)
        restart = torch.rand(z0.shape[0], device=z0.device, generator=generator) < self.reinit_prob
        start = torch.where(restart.view(-1, *([1] * (z0.dim() - 1))), z0, chains[index])
        result = self.sampler(
            energy_fn,
            start,
            reference_precision=reference_precision,
            freeze=freeze,
            generator=generator,
            return_diagnostics=return_diagnostics,
        )
        z = result[0] if return_diagnostics else result
        self.chains[index] = z.detach().to(self.chains.dtype)
        return result
