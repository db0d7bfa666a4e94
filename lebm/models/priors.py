"""Latent priors: the Gaussian reference, the exponentially tilted (EBM) prior and the
multi-stage product-of-ratios prior.

Every prior exposes ``energy(z) -> (B,)``, the total energy ``U(z) = -log p(z) + const``
including the Gaussian reference term, and ``sample(n) -> (n, latent_dim)``. For chains it also
splits ``U(z) = residual_energy(z) + reference_precision * ||z||^2 / 2`` so that samplers can
differentiate the Gaussian part analytically (``residual_energy`` is ``None`` for a pure Gaussian).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn

from lebm.config import Configurable, build, try_to_config
from lebm.models.latents import LatentGroups
from lebm.samplers import Langevin, Sampler
from lebm.samplers.base import SamplerOutput


class Prior(nn.Module, Configurable):
    """Base class of latent priors over flat latents ``(B, latent_dim)``."""

    latent_dim: int
    sampler: Sampler  # priors sampled by chains
    init_std: float  # their chains start from N(0, init_std^2 I)
    _anchor: Tensor

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        self.latent_dim = int(latent_dim)
        self.register_buffer("_anchor", torch.empty(0), persistent=False)  # follows .to(device)

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    def energy(self, z: Tensor) -> Tensor:
        """Total energy ``U(z)`` ``(B,)``."""
        residual = self.residual_energy(z)
        reference = z.flatten(1).square().sum(1) * (self.reference_precision / 2)
        return reference if residual is None else residual + reference

    @property
    def reference_precision(self) -> float:
        """Precision ``1 / sigma^2`` of the Gaussian reference factor (0 for none)."""
        return 0.0

    @property
    def reference_log_normalizer(self) -> float:
        """``log`` of the Gaussian reference's normaliser, ``D/2 log(2 pi sigma^2)`` (0 for none):
        ``-log p0(z) = reference term + reference_log_normalizer``."""
        if not self.reference_precision:
            return 0.0
        return 0.5 * self.latent_dim * math.log(2 * math.pi / self.reference_precision)

    def residual_energy(self, z: Tensor) -> Tensor | None:
        """``U(z)`` minus the Gaussian reference term, ``(B,)``; ``None`` when it is zero."""
        raise NotImplementedError

    def sample(
        self,
        n: int,
        *,
        sampler: Sampler | None = None,
        generator: torch.Generator | None = None,
        return_diagnostics: bool = False,
    ) -> SamplerOutput:
        """``n`` samples ``(n, latent_dim)`` (random numbers from ``generator``; None: global RNG)."""
        raise NotImplementedError

    def _sample_by_chains(
        self, n: int, sampler: Sampler | None, generator: torch.Generator | None, return_diagnostics: bool
    ) -> SamplerOutput:
        """Run ``sampler`` (default ``self.sampler``) on this prior for ``n`` chains started from
        ``N(0, init_std^2 I)`` noise, with the prior's parameters frozen."""
        z0 = torch.randn(n, self.latent_dim, device=self.device, generator=generator) * self.init_std
        chain = sampler if sampler is not None else self.sampler
        return chain(
            self.residual_energy,
            z0,
            inputs=(),
            reference_precision=self.reference_precision,
            freeze=[self],
            generator=generator,
            return_diagnostics=return_diagnostics,
        )


class GaussianPrior(Prior):
    """``p0(z) = N(0, sigma^2 I)``; ``U(z) = ||z||^2 / (2 sigma^2)``; exact sampling.

    Args:
        latent_dim: dimension of z.
        sigma: standard deviation.
        groups: the layout of per-layer latent groups (a ``LatentGroups`` or their sizes, bottom
            first, adding up to ``latent_dim``); None for one flat latent. A multi-layer model with
            this prior is a VLAE (independent Gaussian layers).
    """

    def __init__(self, latent_dim: int, sigma: float = 1.0, groups: LatentGroups | list[int] | None = None) -> None:
        super().__init__(latent_dim)
        if sigma <= 0:
            raise ValueError(f"prior sigma must be > 0, got {sigma}")
        self.sigma = float(sigma)
        if groups is not None and not isinstance(groups, LatentGroups):
            groups = LatentGroups(groups)
        if groups is not None and groups.total != self.latent_dim:
            raise ValueError(
                f"{type(self).__name__} latent_dim={self.latent_dim} but its groups {groups.sizes} add up to "
                f"{groups.total}: make them agree"
            )
        self.groups = groups

    @property
    def reference_precision(self) -> float:
        return 1.0 / self.sigma**2

    def residual_energy(self, z: Tensor) -> Tensor | None:
        return None

    def sample(
        self,
        n: int,
        *,
        sampler: Sampler | None = None,
        generator: torch.Generator | None = None,
        return_diagnostics: bool = False,
    ) -> SamplerOutput:
        """Exact samples ``(n, latent_dim)`` (``sampler`` is ignored)."""
        z = torch.randn(n, self.latent_dim, device=self.device, generator=generator) * self.sigma
        return (z, {}) if return_diagnostics else z


class TiltedGaussianPrior(GaussianPrior):
    """Latent EBM prior ``p(z) ∝ exp(-E(z)) N(0, sigma^2 I)`` (LEBM; ``E = -f_alpha``).

    ``U(z) = E(z) + ||z||^2 / (2 sigma^2)``. Sampling runs ``sampler`` (default: LEBM's
    short-run Langevin, 60 steps of size 0.4) from ``N(0, init_std^2 I)`` noise.

    With ``groups`` the latent is the concatenation of per-layer latents and the prior is one
    joint EBM over all of them (Cui, Wu & Han, ICCV 2023): the same prior plus a layout.

    Args:
        latent_dim: dimension of z.
        energy_net: ``E``: ``(B, latent_dim) -> (B,)``, an energy (not a negative energy).
        sigma: reference standard deviation (``e_prior_sig = 1``).
        sampler: the prior sampler (a ``Langevin`` or a ``PersistentChains``).
        init_std: standard deviation of the chains' initial noise (``e_init_sig = 1``).
        groups: the layout of per-layer latent groups (a ``LatentGroups`` or their sizes,
            bottom first, adding up to ``latent_dim``); None for one flat latent.
    """

    def __init__(
        self,
        latent_dim: int,
        energy_net: nn.Module,
        sigma: float = 1.0,
        sampler: Sampler | None = None,
        init_std: float = 1.0,
        groups: LatentGroups | list[int] | None = None,
    ) -> None:
        super().__init__(latent_dim, sigma, groups)
        self.energy_net = energy_net
        self.sampler = sampler if sampler is not None else Langevin(n_steps=60, step_size=0.4)
        self.init_std = float(init_std)

    def residual_energy(self, z: Tensor) -> Tensor:
        """The learnable tilt ``E(z)`` ``(B,)``."""
        return self.energy_net(z)

    def sample(
        self,
        n: int,
        *,
        sampler: Sampler | None = None,
        generator: torch.Generator | None = None,
        return_diagnostics: bool = False,
    ) -> SamplerOutput:
        """Run ``sampler`` (default: this prior's) from ``N(0, init_std^2 I)`` for ``n`` chains."""
        return self._sample_by_chains(n, sampler, generator, return_diagnostics)


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
        if n_stages < 1:
            raise ValueError(f"ProductOfRatiosPrior n_stages must be >= 1, got {n_stages}")
        self.n_stages = int(n_stages)
        self.ratios = nn.ModuleList(_fresh_copies(ratio_net, self.n_stages))
        self.sampler = sampler if sampler is not None else Langevin(n_steps=60, step_size=0.4)
        self.init_std = float(init_std)
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
        return_diagnostics: bool = False,
    ) -> SamplerOutput:
        """``n`` samples of the current prior ``p_k``: exact for ``k = 0``, else chains from noise."""
        if self.completed_stages == 0:
            return super().sample(n, generator=generator, return_diagnostics=return_diagnostics)
        return self._sample_by_chains(n, sampler, generator, return_diagnostics)

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
