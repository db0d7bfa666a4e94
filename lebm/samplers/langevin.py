"""Short-run Langevin dynamics."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch
from torch import Tensor, nn

from lebm.samplers.base import EnergyFn, Sampler, SamplerOutput, frozen_parameters


class Langevin(Sampler):
    """K steps of (unadjusted) Langevin dynamics on a total energy ``U``.

    Update rule, code form (the papers' released code; the default)::

        z <- z - (s^2 / 2) * grad U(z) + n * eps,      eps ~ N(0, I),  n = s by default

    Paper form (``form="paper"``)::

        z <- z - s * grad U(z) + sqrt(2 s) * eps       (the same dynamics with s_paper = s^2 / 2)

    Set ``noise_std`` to decouple the noise scale ``n`` from the step size (Dual-MCMC's
    low-temperature data chain uses ``n << s``); ``noise_std=0`` gives gradient descent.

    Each step takes **one** ``autograd.grad`` of the batch-summed energy, which yields the
    per-sample gradients because samples are independent. Chains run with the parameters of
    ``freeze`` (and of ``energy_fn`` itself when it is an ``nn.Module``) frozen, under
    ``torch.enable_grad()`` and outside inference mode, so they also work in validation.

    Args:
        n_steps: K, the number of Langevin steps.
        step_size: s.
        noise_std: n; ``None`` means ``n = s`` (code form) or ``sqrt(2 s)`` (paper form).
        grad_clip: if set, each sample's gradient is rescaled to at most this L2 norm.
        form: ``"code"`` or ``"paper"`` parameterisation of ``step_size`` (see above).
    """

    def __init__(
        self,
        n_steps: int = 60,
        step_size: float = 0.4,
        noise_std: float | None = None,
        grad_clip: float | None = None,
        form: Literal["code", "paper"] = "code",
    ) -> None:
        if n_steps < 0:
            raise ValueError(f"Langevin n_steps must be >= 0, got {n_steps}")
        if step_size <= 0:
            raise ValueError(f"Langevin step_size must be > 0, got {step_size}")
        if form not in ("code", "paper"):
            raise ValueError(f"Langevin form must be 'code' or 'paper', got {form!r}")
        if grad_clip is not None and grad_clip <= 0:
            raise ValueError(f"Langevin grad_clip must be > 0 or null, got {grad_clip}")
        self.n_steps = int(n_steps)
        self.step_size = float(step_size)
        self.noise_std = noise_std
        self.grad_clip = grad_clip
        self.form = form

    @property
    def drift(self) -> float:
        """Coefficient of ``-grad U`` in one step: ``s^2/2`` (code form) or ``s`` (paper form)."""
        return self.step_size**2 / 2 if self.form == "code" else self.step_size

    @property
    def noise(self) -> float:
        """Standard deviation of the noise added in one step."""
        if self.noise_std is not None:
            return float(self.noise_std)
        return self.step_size if self.form == "code" else math.sqrt(2 * self.step_size)

    def __call__(
        self,
        energy_fn: EnergyFn,
        z0: Tensor,
        *,
        reference_precision: float = 0.0,
        freeze: Iterable[nn.Module] = (),
        generator: torch.Generator | None = None,
        return_diagnostics: bool = False,
    ) -> SamplerOutput:
        """Run the chains from ``z0`` ``(B, *shape)``; returns ``z`` ``(B, *shape)``, detached.

        The target energy is ``U(z) = energy_fn(z) + reference_precision * ||z||^2 / 2``.
        Diagnostics (with ``return_diagnostics=True``): ``energy`` ``(K,)`` batch-mean ``U``
        before each step and ``grad_norm`` ``(K,)`` batch-mean per-sample norm of ``grad U``.
        """
        modules = list(freeze)
        if isinstance(energy_fn, nn.Module):
            modules.append(energy_fn)
        drift, noise = self.drift, self.noise
        with torch.inference_mode(False), torch.enable_grad(), frozen_parameters(modules):
            z = z0.detach().clone()
            # per-sample traces, reduced once after the loop (no host sync inside it)
            energies = z.new_zeros(self.n_steps, z.shape[0]) if return_diagnostics else None
            grad_norms = z.new_zeros(self.n_steps, z.shape[0]) if return_diagnostics else None
            # the reference term's energy needs ||z||: recorded only when there is one
            state_norms = z.new_zeros(self.n_steps, z.shape[0]) if return_diagnostics and reference_precision else None
            for step in range(self.n_steps):
                z.requires_grad_(True)
                energy = energy_fn(z)
                (grad,) = torch.autograd.grad(energy.sum(), z)
                z = z.detach()
                if reference_precision:
                    grad = grad.add(z, alpha=reference_precision)
                if self.grad_clip is not None or return_diagnostics:
                    norms = torch.linalg.vector_norm(grad.flatten(1), dim=1)
                    if return_diagnostics:
                        energies[step] = energy.detach()
                        grad_norms[step] = norms
                        if reference_precision:
                            state_norms[step] = torch.linalg.vector_norm(z.flatten(1), dim=1)
                    if self.grad_clip is not None:
                        scale = (self.grad_clip / (norms + 1e-12)).clamp(max=1.0)
                        grad = grad * scale.view(-1, *([1] * (grad.dim() - 1)))
                z.add_(grad, alpha=-drift)
                if noise > 0:
                    eps = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
                    z.add_(eps, alpha=noise)
        if return_diagnostics:
            if state_norms is not None:
                energies = energies + state_norms.square() * (reference_precision / 2)
            return z, {"energy": energies.mean(1), "grad_norm": grad_norms.mean(1)}
        return z
