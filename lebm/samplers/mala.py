"""The Metropolis-adjusted Langevin algorithm (MALA)."""

from __future__ import annotations

import torch
from torch import Tensor

from lebm.samplers.adaptation import Sharing
from lebm.samplers.chain import ChainTarget
from lebm.samplers.metropolis import MetropolisSampler


class MALA(MetropolisSampler):
    """K steps of the Metropolis-adjusted Langevin algorithm on a total energy ``U``.

    Each step proposes a Langevin move in the code form of :class:`~lebm.samplers.Langevin`
    (``step_size`` ``s`` is the proposal's standard deviation; the paper form's step is ``s^2 / 2``)::

        z' = z - (s^2 / 2) grad U(z) + s * eps,      eps ~ N(0, I)

    and keeps it with probability ``min(1, exp(log_alpha))``, per chain::

        log_alpha = U(z) - U(z') + ||eps||^2 / 2 - ||z - z' + (s^2 / 2) grad U(z')||^2 / (2 s^2)

    (the second pair of terms is ``log q(z | z') - log q(z' | z)``). Unlike unadjusted Langevin, the
    chain leaves ``exp(-U)`` exactly invariant at any step size: a too-large step shows as a low
    acceptance (diagnostics ``acceptance``), not as a biased sample. One energy-and-gradient
    evaluation per step, plus one at the start.

    Args:
        n_steps: K, the number of MALA steps.
        step_size: s (the first value when adapting).
        target_acceptance: the acceptance adaptation aims at (0.574, optimal for MALA in high
            dimension: Roberts & Rosenthal 1998).
        adapt_steps: dual-averaging warm-up steps counted over all calls (0: no adaptation).
        adapt: ``"shared"`` or ``"per_chain"`` step sizes (see :class:`~lebm.samplers.adaptation.DualAveraging`).
        cuda_graph: on a CUDA device, capture a call as one CUDA graph (see ``Sampler``).
    """

    capturable = True

    def __init__(
        self,
        n_steps: int = 60,
        step_size: float = 0.1,
        target_acceptance: float = 0.574,
        adapt_steps: int = 0,
        adapt: Sharing = "shared",
        cuda_graph: bool = True,
    ) -> None:
        super().__init__(n_steps, step_size, target_acceptance, adapt_steps, adapt, cuda_graph)

    def run(self, target: ChainTarget, z: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """``n_steps`` MALA steps of the states ``z`` ``(B, *shape)``; noise and acceptance draws from ``generator``."""
        if self.n_steps == 0:
            return z
        energy, grad = self.evaluate(target, z)
        noise = torch.empty_like(z)
        for _ in range(self.n_steps):
            step = self.current_step(z)
            drift = step * step / 2
            noise.normal_(generator=generator)
            proposal = z - drift * grad + step * noise
            energy_new, grad_new = self.evaluate(target, proposal)
            # -log q(z'|z) = ||eps||^2 / 2 and -log q(z|z') = ||(z - z' + (s^2/2) grad U(z')) / s||^2 / 2
            # = ||eps - (s/2) (grad U(z) + grad U(z'))||^2 / 2, both up to the same constant
            backward_noise = noise - (step / 2) * (grad + grad_new)
            log_alpha = energy - energy_new + (noise.square() - backward_noise.square()).flatten(1).sum(1) / 2
            z, energy, grad = self.metropolis(
                target, (z, energy, grad), (proposal, energy_new, grad_new), log_alpha, step, generator
            )
        return z
