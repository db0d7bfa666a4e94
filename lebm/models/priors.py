"""Latent priors: the Gaussian reference, the exponentially tilted (EBM) prior and the
multi-stage product-of-ratios prior.

Every prior exposes ``energy(z) -> (B,)``, the total energy ``U(z) = -log p(z) + const``
including the Gaussian reference term, and ``sample(n) -> (n, latent_dim)``. For chains it also
splits ``U(z) = residual_energy(z) + reference_precision * ||z||^2 / 2`` so that samplers can
differentiate the Gaussian part analytically (``residual_energy`` is ``None`` for a pure Gaussian).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from lebm import arguments
from lebm.config import Configurable
from lebm.nets.latents import LatentGroups
from lebm.randomness import rng_devices
from lebm.samplers import Langevin, Sampler
from lebm.samplers.base import SamplerOutput
from lebm.samplers.chain import Diagnostics, modules_in_mode
from lebm.samplers.initializers import NoiseStart, check_start
from lebm.training.inputs import refuse_unused_sampler


def check_energy_net(owner: str, net: Any, latent_dim: int, name: str = "energy_net") -> nn.Module:
    """``net`` (the argument ``name``) when it is an ``nn.Module`` that takes latents
    ``(B, latent_dim)`` and returns one value per latent (an energy, a log-ratio), ``(B,)``: probed
    once on two zero latents (no gradients, eval mode, torch's RNG untouched, on the net's device and
    in its dtype);
    else one line naming the problem and the fix."""
    if net is None:
        raise ValueError(
            f"{owner} {name} is missing: pass a net (B, latent_dim) -> (B,), e.g. "
            f"lebm.nets.EnergyMLP({latent_dim}) (model.init_args.prior.init_args.{name} in a recipe)"
        )
    if not isinstance(net, nn.Module):
        raise TypeError(
            f"{owner} {name} must be a torch.nn.Module (B, latent_dim) -> (B,), e.g. lebm.nets.EnergyMLP("
            f"{latent_dim}), got {type(net).__name__}"
        )
    declared = getattr(net, "in_dim", None)
    if isinstance(declared, int) and declared != latent_dim:
        prior_option, option = "model.init_args.prior.init_args.latent_dim", f"model.init_args.prior.init_args.{name}"
        raise ValueError(
            f"latent sizes disagree: the latent size is {latent_dim} ({prior_option}) but the prior's {name} "
            f"({type(net).__name__}) takes in_dim={declared}. Set {option}.init_args.in_dim to {latent_dim} "
            f"(or {prior_option} to {declared}; {owner} in Python)"
        )
    weight = next((p for p in net.parameters() if p.is_floating_point()), torch.empty(0))
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=rng_devices(weight.device)), modules_in_mode([net], "eval"):
            energy = net(torch.zeros(2, latent_dim, device=weight.device, dtype=weight.dtype))
    except (RuntimeError, TypeError, ValueError, IndexError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(
            f"{owner} {name} ({type(net).__name__}) cannot take latents of latent_dim={latent_dim} ({reason}): "
            "its input size must equal the prior's latent_dim (model.init_args.prior.init_args.latent_dim)"
        ) from None
    if not isinstance(energy, Tensor) or tuple(energy.shape) != (2,):
        got = tuple(energy.shape) if isinstance(energy, Tensor) else type(energy).__name__
        raise ValueError(
            f"{owner} {name} ({type(net).__name__}) must return one value per latent, (B,), got {got} for "
            "2 latents: end it with a layer of one output and squeeze it (e.g. net(z).squeeze(1))"
        )
    return net


class Prior(nn.Module, Configurable):
    """Base class of latent priors over flat latents ``(B, latent_dim)``."""

    latent_dim: int
    sampler: Sampler  # priors sampled by chains
    init_std: float  # their chains start from N(0, init_std^2 I)
    _anchor: Tensor

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = arguments.whole(type(self).__name__, "latent_dim", latent_dim, at_least=1)
        self.register_buffer("_anchor", torch.empty(0), persistent=False)  # follows .to(device)

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype the prior runs in (its buffers and parameters follow ``.to(dtype)``)."""
        return self._anchor.dtype

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

    @property
    def samples_by_chains(self) -> bool:
        """Whether :meth:`sample` runs a chain, so that a ``sampler`` given to it is used (default
        True); False for a prior sampled exactly (a Gaussian), which refuses a sampler."""
        return True

    def sample(
        self,
        n: int,
        *,
        sampler: Sampler | None = None,
        generator: torch.Generator | None = None,
        return_diagnostics: Diagnostics = False,
        start: Tensor | None = None,
    ) -> SamplerOutput:
        """``n`` samples ``(n, latent_dim)`` (random numbers from ``generator``; None: global RNG);
        a prior sampled by chains starts them from ``start`` ``(n, latent_dim)`` when given (a
        :class:`~lebm.samplers.ChainInitializer`'s start), else from its own noise."""
        raise NotImplementedError

    def _sample_by_chains(
        self,
        n: int,
        sampler: Sampler | None,
        generator: torch.Generator | None,
        return_diagnostics: Diagnostics,
        start: Tensor | None = None,
    ) -> SamplerOutput:
        """Run ``sampler`` (default ``self.sampler``) on this prior for ``n`` chains started from
        ``start`` ``(n, latent_dim)`` (None: :class:`~lebm.samplers.NoiseStart` ``N(0, init_std^2 I)``,
        drawn from ``generator``), with the prior's parameters frozen."""
        if start is None:
            start = NoiseStart(self.latent_dim, self.init_std).start(n, generator=generator, device=self.device)
        # in the prior's dtype: a float64 model outside a 64-true run draws its noise in torch's float32
        z0 = check_start(start, n, f"{type(self).__name__}.sample(start=...)", (self.latent_dim,), self.dtype)
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
        self.sigma = arguments.scale(type(self).__name__, "sigma", sigma)
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
        """Always ``None``: the prior is its Gaussian reference, so there is no residual term."""
        return None

    @property
    def samples_by_chains(self) -> bool:
        """False: the Gaussian is sampled exactly."""
        return False

    def sample(
        self,
        n: int,
        *,
        sampler: Sampler | None = None,
        generator: torch.Generator | None = None,
        return_diagnostics: Diagnostics = False,
        start: Tensor | None = None,
    ) -> SamplerOutput:
        """Exact samples ``(n, latent_dim)``; a ``sampler``, which no chain would use, is refused
        (``start`` is ignored)."""
        refuse_unused_sampler(
            sampler,
            f"{type(self).__name__}.sample(n, sampler=...)",
            "the prior is a Gaussian, sampled exactly without a chain",
            "leave sampler out (a chain samples a tilted prior, e.g. TiltedGaussianPrior)",
        )
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
        self.energy_net = check_energy_net(type(self).__name__, energy_net, self.latent_dim)
        if sampler is not None and not isinstance(sampler, Sampler):
            raise TypeError(
                f"TiltedGaussianPrior sampler must be a lebm.samplers.Sampler (e.g. Langevin(60, 0.4)) or None, got "
                f"{type(sampler).__name__}"
            )
        self.sampler = sampler if sampler is not None else Langevin(n_steps=60, step_size=0.4)
        self.init_std = arguments.number(
            "TiltedGaussianPrior", "init_std", init_std, above=0, at_most=arguments.SQUARE_FITS_FLOAT32
        )

    def residual_energy(self, z: Tensor) -> Tensor:
        """The learnable tilt ``E(z)`` ``(B,)``."""
        return self.energy_net(z)

    @property
    def samples_by_chains(self) -> bool:
        """True: the tilted prior is sampled by its chain."""
        return True

    def sample(
        self,
        n: int,
        *,
        sampler: Sampler | None = None,
        generator: torch.Generator | None = None,
        return_diagnostics: Diagnostics = False,
        start: Tensor | None = None,
    ) -> SamplerOutput:
        """Run ``sampler`` (default: this prior's) for ``n`` chains from ``start`` ``(n, latent_dim)``
        (default: ``N(0, init_std^2 I)`` noise)."""
        return self._sample_by_chains(n, sampler, generator, return_diagnostics, start)
