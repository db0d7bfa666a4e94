"""Hamiltonian Monte Carlo with a leapfrog integrator and an optional diagonal mass."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real

import torch
from torch import Tensor

from lebm import arguments
from lebm.samplers.adaptation import Sharing
from lebm.samplers.chain import ChainTarget
from lebm.samplers.metropolis import MetropolisSampler


class HMC(MetropolisSampler):
    """K transitions of Hamiltonian Monte Carlo on a total energy ``U``.

    Each transition draws a momentum ``p ~ N(0, M)`` (``M = diag(mass)``), runs ``n_leapfrog``
    leapfrog steps of size ``eps`` on ``H(z, p) = U(z) + p^T M^-1 p / 2``::

        p <- p - (eps / 2) grad U(z)
        repeat L times:  z <- z + eps M^-1 p;  p <- p - eps grad U(z)   (the last momentum step is eps / 2)

    and keeps the end point with probability ``min(1, exp(H(z, p) - H(z', p')))``, per chain.
    ``n_leapfrog`` energy-and-gradient evaluations per transition, plus one at the start.

    Args:
        n_steps: K, the number of HMC transitions.
        step_size: eps, the leapfrog step (the first value when adapting).
        n_leapfrog: L, leapfrog steps per transition.
        mass: the diagonal of ``M``: a number, or one value per coordinate of a state (its
            flattened shape); None is the identity.
        target_acceptance: the acceptance adaptation aims at (0.65, Hoffman & Gelman 2014; 0.651 is
            optimal in high dimension: Beskos et al. 2013).
        adapt_steps: dual-averaging warm-up transitions counted over all calls (0: no adaptation).
        adapt: ``"shared"`` or ``"per_chain"`` step sizes.
        cuda_graph: on a CUDA device, capture a call as one CUDA graph (see ``Sampler``).
    """

    capturable = True
    inverse_mass: Tensor

    def __init__(
        self,
        n_steps: int = 10,
        step_size: float = 0.1,
        n_leapfrog: int = 5,
        mass: float | Sequence[float] | None = None,
        target_acceptance: float = 0.65,
        adapt_steps: int = 0,
        adapt: Sharing = "shared",
        cuda_graph: bool = True,
    ) -> None:
        super().__init__(n_steps, step_size, target_acceptance, adapt_steps, adapt, cuda_graph)
        self.n_leapfrog = arguments.whole("HMC", "n_leapfrog", n_leapfrog, at_least=1)
        given = [1.0] if mass is None else list(mass.flatten()) if isinstance(mass, Tensor) else mass
        given = list(given) if isinstance(given, Sequence) and not isinstance(given, str) else [given]
        given = [m.item() if isinstance(m, Tensor) else m for m in given]
        if (
            isinstance(mass, str)
            or not given
            or not all(isinstance(m, Real) and not isinstance(m, bool) for m in given)
        ):
            raise ValueError(f"HMC mass must be a number or a list of numbers (one per coordinate), got {mass!r}")
        masses = torch.as_tensor([float(m) for m in given], dtype=torch.float32).flatten()
        if not bool((masses > 0).all()) or not bool(torch.isfinite(masses).all()):
            raise ValueError(f"HMC mass must be positive and finite (and within float32's range), got {mass}")
        self.mass = mass if mass is None or isinstance(mass, (int, float)) else [float(m) for m in mass]
        self.register_buffer("inverse_mass", 1.0 / masses, persistent=False)

    def prepare(self, z0: Tensor) -> None:
        """Check the mass against the state's size and keep it on the chains' device."""
        super().prepare(z0)
        size = z0[0].numel()
        if self.inverse_mass.numel() not in (1, size):
            raise ValueError(
                f"HMC mass has {self.inverse_mass.numel()} values but a state of shape {tuple(z0.shape[1:])} has "
                f"{size} coordinates: give one value per coordinate, or a single number"
            )
        dtype = torch.float32 if z0.dtype in (torch.float16, torch.bfloat16) else z0.dtype  # chains keep float32
        if self.inverse_mass.device != z0.device or self.inverse_mass.dtype != dtype:
            masses = torch.as_tensor(1.0 if self.mass is None else self.mass, dtype=torch.float64).flatten()
            self.inverse_mass = (1.0 / masses).to(device=z0.device, dtype=dtype)  # from the settings: never rounded

    def run(self, target: ChainTarget, z: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """``n_steps`` HMC transitions of the states ``z`` ``(B, *shape)``; momenta and acceptance
        draws from ``generator``."""
        if self.n_steps == 0:
            return z
        inverse_mass = (
            self.inverse_mass.reshape(()) if self.inverse_mass.numel() == 1 else self.inverse_mass.view(z.shape[1:])
        )
        mass_sqrt = inverse_mass.rsqrt()  # momenta p ~ N(0, M): sqrt(M) times standard normal draws

        def kinetic(p: Tensor) -> Tensor:
            return (p.square() * inverse_mass).flatten(1).sum(1) / 2

        energy, grad = self.evaluate(target, z)
        momentum = torch.empty_like(z)
        for _ in range(self.n_steps):
            step = self.current_step(z)
            momentum.normal_(generator=generator)
            p0 = momentum * mass_sqrt
            p = p0 - step / 2 * grad
            q = z
            for leap in range(self.n_leapfrog):
                q = q + step * inverse_mass * p
                energy_new, grad_new = self.evaluate(target, q)
                p = p - (step if leap < self.n_leapfrog - 1 else step / 2) * grad_new
            log_alpha = energy + kinetic(p0) - energy_new - kinetic(p)
            current, proposal = (z, energy, grad), (q, energy_new, grad_new)
            z, energy, grad = self.metropolis(target, current, proposal, log_alpha, step, generator)
        return z

    def settings(self) -> dict[str, object]:
        """The constructor's settings, for ``repr``."""
        return {**super().settings(), "n_leapfrog": self.n_leapfrog, "mass": self.mass}
