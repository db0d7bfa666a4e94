"""What the Metropolis-adjusted samplers (MALA, HMC) share: the accept/reject step, the acceptance
diagnostics and the adapted step size."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lebm import arguments
from lebm.samplers.adaptation import DualAveraging, Sharing
from lebm.samplers.base import Sampler
from lebm.samplers.chain import ChainTarget, per_chain


class MetropolisSampler(Sampler, nn.Module):
    """Base of samplers that propose a move and accept it with the Metropolis-Hastings probability
    ``min(1, exp(log_alpha))``, per chain, with ``torch.where`` (no host synchronisation).

    Every accepted-or-kept state is recorded in the diagnostics (``energy``, ``grad_norm``) with the
    batch-mean acceptance probability of the step (``acceptance``) and, while the step size adapts,
    its batch mean (``step_size``).

    Step-size adaptation (:class:`~lebm.samplers.adaptation.DualAveraging`) runs during the first
    ``adapt_steps`` steps counted over the calls made in training mode (``sampler.train()``, the
    default, or the owning model's); its state is a registered buffer of this sampler (an
    ``nn.Module``), saved in the checkpoints of the model that owns it.

    Energies are evaluated in float32 with autocast off, also under bf16 autocast: an accept/reject
    step on energies rounded to bfloat16 would not be exact (``U(z) - U(z')`` of two large rounded
    numbers), and the chain would reject small moves at random.

    Args:
        n_steps: the number of Metropolis-Hastings steps per call.
        step_size: the first (or, without adaptation, the only) step size.
        target_acceptance: the mean acceptance probability adaptation aims at.
        adapt_steps: the number of adaptation steps (0: the step size stays ``step_size``).
        adapt: ``"shared"`` (one step size for all chains) or ``"per_chain"``.
        cuda_graph: on a CUDA device, run a call as one captured CUDA graph (see ``Sampler``).
    """

    capturable = True

    def __init__(
        self,
        n_steps: int,
        step_size: float,
        target_acceptance: float,
        adapt_steps: int = 0,
        adapt: Sharing = "shared",
        cuda_graph: bool = True,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.n_steps = arguments.whole(name, "n_steps", n_steps)
        self.step_size = arguments.step_size(name, step_size)
        self.target_acceptance = arguments.number(name, "target_acceptance", target_acceptance, above=0, below=1)
        self.adapt_steps = arguments.whole(name, "adapt_steps", adapt_steps)
        self.adapt: Sharing = arguments.one_of(name, "adapt", adapt, ("shared", "per_chain"))
        self.cuda_graph = arguments.flag(name, "cuda_graph", cuda_graph)
        self.adaptation = DualAveraging(self.step_size, self.target_acceptance, self.adapt_steps, adapt)
        #: Whether this call adapts (set by :meth:`prepare`; part of a captured graph's key).
        self.adapting = self.adapt_steps > 0

    def capture_allowed(self) -> bool:
        """A chain of no steps has nothing to capture."""
        return super().capture_allowed() and self.n_steps > 0

    def prepare(self, z0: Tensor) -> None:
        """Size a per-chain adaptation state for ``z0``'s chains, keep the state on their device and
        decide whether this call adapts: only in training mode (a model's ``train()``; validation,
        testing and ``lebm.load``'s evaluation mode leave the step size as it is, so evaluating never
        changes what training does next) and during warm-up. On the CPU, where reading the counter
        costs nothing, a call after warm-up leaves the update out; on a GPU the update stays in the
        chain, masked by the counter on the device (no host synchronisation), and changes nothing."""
        if self.adaptation.count.device != z0.device:
            self.adaptation.to(z0.device)
        self.adaptation.prepare(z0.shape[0], z0.device)
        warmup_left = z0.device.type != "cpu" or bool(self.adaptation.count < self.adapt_steps)
        self.adapting = self.adapt_steps > 0 and self.training and warmup_left

    def scale_step_size(self, factor: float) -> float:
        """Scale ``step_size`` and every adapted step size by ``factor``; returns the new ``step_size``."""
        new = super().scale_step_size(factor)
        self.adaptation.scale(factor)
        return new

    @property
    def adapted_step_size(self) -> Tensor:
        """The step size the chains use now: ``()``, or ``(B,)`` per chain (a host read is up to you)."""
        return self.adaptation.current_log_step.exp()

    def current_step(self, z: Tensor) -> Tensor | float:
        """The step size of the next step: the float ``step_size`` without adaptation, else a
        device tensor ``()`` or ``(B, 1, ..., 1)``."""
        return self.adaptation.step_size(z) if self.adapt_steps else self.step_size

    @staticmethod
    def evaluate(target: ChainTarget, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(U(z), grad U(z))`` in float32 with autocast off, left out of the diagnostics (the kept
        states are recorded by :meth:`metropolis`)."""
        return target.energy_and_grad(z, record=False, full_precision=True)

    def metropolis(
        self,
        target: ChainTarget,
        current: tuple[Tensor, Tensor, Tensor],
        proposal: tuple[Tensor, Tensor, Tensor],
        log_alpha: Tensor,
        step: Tensor | float,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Accept each chain's proposal with probability ``min(1, exp(log_alpha))`` ``(B,)``.

        ``current`` and ``proposal`` are ``(state (B, *shape), energy (B,), grad (B, *shape))``;
        returns the kept triple. A proposal whose ``log_alpha`` is NaN or ``-inf`` (its energy NaN or
        infinite) is rejected. Records the diagnostics and, while adapting, takes one adaptation step.
        """
        z, energy, grad = current
        z_new, energy_new, grad_new = proposal
        uniform = torch.rand(z.shape[0], device=z.device, generator=generator)
        accept = torch.log(uniform) < log_alpha  # False for NaN
        accept_prob = torch.nan_to_num(log_alpha.clamp(max=0.0).exp(), nan=0.0)
        mask = per_chain(accept, z)
        z = torch.where(mask, z_new, z)
        energy = torch.where(accept, energy_new, energy)
        grad = torch.where(mask, grad_new, grad)
        target.record_state(energy, grad)
        target.note("acceptance", accept_prob.mean())
        if self.adapting:
            target.note("step_size", torch.as_tensor(step).float().mean())
            self.adaptation.update(accept_prob)
        return z, energy, grad

    def settings(self) -> dict[str, Any]:
        """The constructor's settings, for ``repr``."""
        return {
            name: getattr(self, name)
            for name in ("n_steps", "step_size", "target_acceptance", "adapt_steps", "adapt")
            if hasattr(self, name)
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.settings().items())})"
