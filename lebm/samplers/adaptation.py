"""Step-size adaptation by dual averaging (Hoffman & Gelman 2014, JMLR, section 3.2).

A Metropolis-adjusted sampler (MALA, HMC) tunes its step size ``eps`` so that its mean acceptance
probability approaches a target ``delta``. At the ``m``-th adaptation step, with ``alpha_m`` the
acceptance probability just observed::

    H_m           = (1 - 1/(m + t0)) H_{m-1} + (delta - alpha_m) / (m + t0)
    log eps_m     = mu - sqrt(m) / gamma * H_m                 (the step size used next)
    log epsbar_m  = m^-kappa log eps_m + (1 - m^-kappa) log epsbar_{m-1}

with ``mu = log(10 eps_0)``, ``gamma = 0.05``, ``t0 = 10``, ``kappa = 0.75`` (the paper's values).
Adaptation lasts ``warmup`` steps, counted over every call of the sampler; after it the sampler uses
the averaged ``epsbar`` and the state stops changing (a chain is an exact MCMC kernel only then).

The state lives in registered buffers, updated in place with ``torch.where`` on the step counter, so
it is saved in checkpoints with the model that owns the sampler and a captured chain (a CUDA graph)
keeps adapting while it replays: no host synchronisation. Under DDP each rank adapts on its own
chains (no collective inside a chain), so the state is rank-local (``rank_local_buffers``): a
checkpoint keeps every rank's, and resuming gives each rank its own back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lebm import arguments
from lebm.samplers.chain import per_chain

Sharing = Literal["shared", "per_chain"]

GAMMA = 0.05
T0 = 10.0
KAPPA = 0.75


class DualAveraging(nn.Module):
    """The adaptation state of one sampler: the step counter and the dual-averaging statistics.

    ``shared``: one step size for every chain, adapted on the batch-mean acceptance; state shape
    ``()``. ``per_chain``: one step size per chain ``(B,)``, adapted on each chain's own acceptance;
    the state is sized at the first call (:meth:`prepare`). A later call with another number of
    chains during warm-up is refused; after warm-up its chains all use the median adapted step.

    Args:
        step_size: ``eps_0``, the first step size (``mu = log(10 eps_0)``).
        target: ``delta``, the target mean acceptance probability.
        warmup: the number of adaptation steps (0: no adaptation, ``eps_0`` throughout).
        sharing: ``"shared"`` or ``"per_chain"``.
    """

    #: Each rank adapts on its own chains' acceptance: its state is kept per rank in checkpoints.
    rank_local_buffers = ("count", "h_bar", "log_step", "log_step_avg")
    count: Tensor
    mu: Tensor
    h_bar: Tensor
    log_step: Tensor
    log_step_avg: Tensor

    def __init__(self, step_size: float, target: float, warmup: int, sharing: Sharing = "shared") -> None:
        super().__init__()
        step_size = arguments.step_size("DualAveraging", step_size)
        self.target = arguments.number("DualAveraging", "target (acceptance)", target, above=0, below=1)
        self.warmup = arguments.whole("DualAveraging", "warmup (steps)", warmup)
        self.sharing: Sharing = arguments.one_of("DualAveraging", "sharing", sharing, ("shared", "per_chain"))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))  # an integer: exact in any precision
        self.register_buffer("mu", torch.full((), math.log(10.0 * step_size)))
        self.register_buffer("h_bar", torch.zeros(()))
        self.register_buffer("log_step", torch.full((), math.log(step_size)))
        self.register_buffer("log_step_avg", torch.full((), math.log(step_size)))

    @property
    def finished(self) -> bool:
        """Whether warm-up is over (reads the counter: a host synchronisation, not for chains)."""
        return bool(self.count >= self.warmup)

    def prepare(self, chains: int, device: torch.device) -> None:
        """Size a per-chain state for ``chains`` chains (at the first call) and move the state to
        ``device``; a shared state needs nothing. Runs outside any captured graph."""
        if self.sharing != "per_chain" or self.log_step.dim() == 1 and len(self.log_step) == chains:
            return
        if self.log_step.dim() == 0:
            for name in ("h_bar", "log_step", "log_step_avg"):
                setattr(self, name, getattr(self, name).expand(chains).clone())
        elif not self.finished:
            raise ValueError(
                f"per-chain step-size adaptation started with {len(self.log_step)} chains and got a call with {chains} "
                "during its warm-up: keep the number of chains fixed while adapting, or adapt a 'shared' step size"
            )

    @property
    def current_log_step(self) -> Tensor:
        """``log eps_m`` during warm-up, ``log epsbar`` after it: ``()`` or ``(B,)`` per chain."""
        return torch.where(self.count < self.warmup, self.log_step, self.log_step_avg)

    def step_size(self, like: Tensor) -> Tensor:
        """The step size of the next step, ``(B, 1, ..., 1)`` to broadcast over states ``like``
        ``(B, *shape)``: ``eps_m`` during warm-up, ``epsbar`` after it."""
        log_step = self.current_log_step
        if log_step.dim() == 1 and len(log_step) != like.shape[0]:  # after warm-up, another batch
            log_step = log_step.median().expand(like.shape[0])
        step = log_step.exp().to(like.dtype)
        return per_chain(step, like) if step.dim() == 1 else step

    def update(self, accept_prob: Tensor) -> None:
        """One dual-averaging step from the chains' acceptance probabilities ``(B,)``, in place;
        nothing changes once ``warmup`` steps are done."""
        if self.warmup == 0:
            return
        alpha = accept_prob.detach().to(self.h_bar.dtype)
        if self.sharing == "shared" or (self.h_bar.dim() == 1 and len(self.h_bar) != len(alpha)):
            alpha = alpha.mean()
        adapting = self.count < self.warmup
        m = (self.count + 1).to(self.h_bar.dtype)
        weight = 1.0 / (m + T0)
        h_bar = (1 - weight) * self.h_bar + weight * (self.target - alpha)
        log_step = self.mu - m.sqrt() / GAMMA * h_bar
        eta = m.pow(-KAPPA)
        log_step_avg = eta * log_step + (1 - eta) * self.log_step_avg
        self.h_bar.copy_(torch.where(adapting, h_bar, self.h_bar))
        self.log_step.copy_(torch.where(adapting, log_step, self.log_step))
        self.log_step_avg.copy_(torch.where(adapting, log_step_avg, self.log_step_avg))
        self.count.add_(adapting.long())

    def scale(self, factor: float) -> None:
        """Multiply every step size held (the first, the current and the averaged) by ``factor``."""
        shift = math.log(factor)
        with torch.no_grad():
            self.mu.add_(shift)
            self.log_step.add_(shift)
            self.log_step_avg.add_(shift)

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """A per-chain state is sized at its first call: take the checkpoint's size when loading. A
        checkpoint without this state (written with another sampler, e.g. Langevin, in this place)
        leaves the fresh state: evaluating a Langevin-trained model with MALA from a recipe works."""
        for name in ("h_bar", "log_step", "log_step_avg"):
            saved = state_dict.get(prefix + name)
            if isinstance(saved, Tensor) and saved.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(saved, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # type: ignore[arg-type]
        missing_keys = args[2] if len(args) > 2 else kwargs.get("missing_keys")
        if isinstance(missing_keys, list):  # a checkpoint of a chain that did not adapt: start afresh
            own = {prefix + name for name in self._buffers}
            missing_keys[:] = [key for key in missing_keys if key not in own]

    def extra_repr(self) -> str:
        return f"target={self.target}, warmup={self.warmup}, sharing={self.sharing!r}"


def drop_unused_adaptation_state(state_dict: dict[str, Any], keep: Iterable[str]) -> list[str]:
    """Remove from a checkpoint's ``state_dict`` the adaptation state of samplers that the loading
    model does not have in that place (a checkpoint written with MALA, evaluated with Langevin):
    every ``...adaptation.<buffer>`` key not in ``keep`` (the model's own keys). Returns the removed keys."""
    names = {"count", "mu", "h_bar", "log_step", "log_step_avg"}
    own = set(keep)
    removed = [
        key
        for key in state_dict
        if key not in own and key.rsplit(".", 2)[-2:-1] == ["adaptation"] and key.rsplit(".", 1)[-1] in names
    ]
    for key in removed:
        del state_dict[key]
    return removed
