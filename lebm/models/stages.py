"""The prior of multi-stage NCE (Xiao & Han, NeurIPS 2022) and its stage state: a Gaussian tilted
by a product of density ratios, one per completed stage, and the stage counters a run resumes from.

Only :class:`lebm.models.MultiStageNCE` trains it (stage by stage); any latent-variable method can
sample from it once trained.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from lebm import arguments
from lebm.config import build, try_to_config
from lebm.models.priors import GaussianPrior, check_energy_net
from lebm.samplers import Langevin, Sampler
from lebm.samplers.base import SamplerOutput
from lebm.samplers.chain import Diagnostics


class ProductOfRatiosPrior(GaussianPrior):
    """Multi-stage NCE prior ``p_k(z) ∝ N(0, sigma^2 I) * prod_{j<k} r_j(z)`` (Xiao & Han 2022).

    Each stage ``j`` owns a ratio net ``h_j: (B, latent_dim) -> (B,)`` whose output is the logit
    ``h_j = log r_j`` (a log density ratio, i.e. a *negative* energy). The prior after ``k``
    completed stages is the tilted Gaussian with residual energy::

        E_k(z) = -sum_{j<k} h_j(z),        U_k(z) = E_k(z) + ||z||^2 / (2 sigma^2)

    so a model trained through all ``n_stages`` samples from the full product. Stage bookkeeping
    (``completed_stages``, ``stage_iteration``) is the buffer ``stage_state``, saved in checkpoints:
    a run resumed in the middle of stage ``k`` goes on with stage ``k``.

    Sampling: exact from the Gaussian while no stage is completed, otherwise ``sampler``
    (default LEBM's short-run Langevin, 60 steps of 0.4; a ``PersistentChains`` gives persistent
    negatives) from ``N(0, init_std^2 I)`` noise.

    Args:
        latent_dim: dimension of z.
        ratio_net: the stage classifier; every stage gets its own freshly initialised copy
            (rebuilt from its config when it is an lebm component, else deep-copied and reset).
        n_stages: K, the number of stages (ratio nets).
        sigma: standard deviation of the base Gaussian ``p_0``.
        sampler: chain for the stage priors ``p_k``, ``k > 0``.
        init_std: standard deviation of the chains' initial noise.
    """

    def __init__(
        self,
        latent_dim: int,
        ratio_net: nn.Module,
        n_stages: int = 4,
        sigma: float = 1.0,
        sampler: Sampler | None = None,
        init_std: float = 1.0,
    ) -> None:
        super().__init__(latent_dim, sigma)
        self.n_stages = arguments.whole("ProductOfRatiosPrior", "n_stages", n_stages, at_least=1)
        ratio_net = check_energy_net("ProductOfRatiosPrior", ratio_net, self.latent_dim, name="ratio_net")
        self.ratios = nn.ModuleList(_fresh_copies(ratio_net, self.n_stages))
        self.sampler = sampler if sampler is not None else Langevin(n_steps=60, step_size=0.4)
        self.init_std = arguments.number(
            "ProductOfRatiosPrior", "init_std", init_std, above=0, at_most=arguments.SQUARE_FITS_FLOAT32
        )
        # [completed stages, iterations done in the stage in progress]: a buffer so that it is
        # saved in checkpoints, mirrored by Python ints so that reading it never syncs a device.
        self.register_buffer("stage_state", torch.zeros(2, dtype=torch.long))
        self._completed_stages = 0
        self._stage_iteration = 0

    # ------------------------------------------------------------ the density
    def log_ratio(self, z: Tensor, n_stages: int | None = None) -> Tensor:
        """``sum_{j<n} h_j(z)`` ``(B,)``: the estimate of ``log q(z) - log p_0(z)`` from the first
        ``n_stages`` ratios (default: the completed ones)."""
        ratios = self.ratios[: self.completed_stages if n_stages is None else n_stages]
        if len(ratios) == 0:
            return z.new_zeros(z.shape[0])
        total = ratios[0](z)  # no zeros buffer: this runs at every chain step
        for ratio in ratios[1:]:
            total = total + ratio(z)
        return total

    @property
    def samples_by_chains(self) -> bool:
        """Whether :meth:`sample` runs chains: once a stage is completed (before, it is exact)."""
        return self.completed_stages > 0

    def residual_energy(self, z: Tensor) -> Tensor | None:
        """``-sum_{j<k} h_j(z)`` ``(B,)`` over the ``k`` completed stages; ``None`` while ``k = 0``."""
        if self.completed_stages == 0:
            return None
        return -self.log_ratio(z)

    def sample(
        self,
        n: int,
        *,
        sampler: Sampler | None = None,
        generator: torch.Generator | None = None,
        return_diagnostics: Diagnostics = False,
        start: Tensor | None = None,
    ) -> SamplerOutput:
        """``n`` samples of the current prior ``p_k``: exact for ``k = 0``, else chains from ``start``
        ``(n, latent_dim)`` (default: noise)."""
        if self.completed_stages == 0:
            return super().sample(n, sampler=sampler, generator=generator, return_diagnostics=return_diagnostics)
        return self._sample_by_chains(n, sampler, generator, return_diagnostics, start)

    #: The iteration counter within a stage, which the energy never reads: left out of the
    #: capture key (the number of completed stages, which it reads, is in it).
    chain_capture_ignore = ("_stage_iteration",)

    # -------------------------------------------------------- stage bookkeeping
    @property
    def finished(self) -> bool:
        """Whether every stage has been completed (the prior is the full product)."""
        return self.completed_stages >= self.n_stages

    @property
    def current_ratio(self) -> nn.Module:
        """The ratio net ``h_k`` of the stage in progress."""
        if self.finished:
            raise RuntimeError(f"all {self.n_stages} stages are completed; there is no stage in progress")
        return self.ratios[self.completed_stages]

    def complete_stage(self) -> None:
        """Fold the stage in progress into the prior: ``p_{k+1} = p_k * exp(h_k)``."""
        if self.finished:
            raise RuntimeError(f"all {self.n_stages} stages are already completed")
        self._set_stage_state(self._completed_stages + 1, 0)

    def record_iteration(self) -> None:
        """Count one training iteration of the stage in progress."""
        self._set_stage_state(self._completed_stages, self._stage_iteration + 1)

    @property
    def completed_stages(self) -> int:
        """``k``: how many ratios are folded into the prior (the index of the stage in progress)."""
        return self._completed_stages

    @property
    def stage_iteration(self) -> int:
        """Training iterations done in the stage in progress."""
        return self._stage_iteration

    def _set_stage_state(self, completed_stages: int, stage_iteration: int) -> None:
        self._completed_stages, self._stage_iteration = int(completed_stages), int(stage_iteration)
        self.stage_state[0] = self._completed_stages  # device writes, no host sync
        self.stage_state[1] = self._stage_iteration

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        saved = state_dict.get(prefix + "stage_state")
        if saved is not None:
            self._completed_stages, self._stage_iteration = (int(v) for v in saved.tolist())


def _fresh_copies(net: nn.Module, n: int) -> list[nn.Module]:
    """``n`` independently initialised nets like ``net`` (``net`` itself is the first)."""
    config = try_to_config(net)
    if config is not None:
        return [net] + [build(config) for _ in range(n - 1)]
    copies = [net]
    for _ in range(n - 1):
        twin = copy.deepcopy(net)
        for module in twin.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
        copies.append(twin)
    return copies
