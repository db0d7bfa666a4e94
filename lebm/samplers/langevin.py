"""Short-run Langevin dynamics."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from lebm import arguments
from lebm.samplers.base import Sampler
from lebm.samplers.chain import ChainTarget, per_chain
from lebm.user_warnings import warn_user

#: Why a chain setting has an upper bound.
_FLOAT32 = "float32 chain states overflow above 3.4e38"


#: A code-form step size below which float32 chain states of order 1 do not move: the noise ``s``
#: is under half their spacing (about 6e-8) and the drift ``s^2 / 2`` far under it.
TINY_STEP = 1e-8


class Langevin(Sampler):
    """K steps of (unadjusted) Langevin dynamics on a total energy ``U``.

    Update rule, code form (the papers' released code; the default)::

        z <- z - (s^2 / 2) * grad U(z) + n * eps,      eps ~ N(0, I),  n = s by default

    Paper form (``form="paper"``)::

        z <- z - s * grad U(z) + sqrt(2 s) * eps       (the same dynamics with s_paper = s^2 / 2)

    Set ``noise_std`` to decouple the noise scale ``n`` from the step size (Dual-MCMC's
    low-temperature data chain uses ``n << s``); ``noise_std=0`` gives gradient descent.

    Each step asks the target for one gradient: one ``autograd.grad`` of the batch-summed energy
    (per-sample gradients, since samples are independent) plus the analytic reference term. The
    :class:`~lebm.samplers.Sampler` base runs the chain with the parameters of ``freeze`` frozen,
    under ``torch.enable_grad()`` and outside inference mode, so it also works in validation.

    Args:
        n_steps: K, the number of Langevin steps.
        step_size: s.
        noise_std: n; ``None`` means ``n = s`` (code form) or ``sqrt(2 s)`` (paper form).
        grad_clip: if set, each sample's gradient is rescaled to at most this L2 norm.
        form: ``"code"`` or ``"paper"`` parameterisation of ``step_size`` (see above).
        cuda_graph: on a CUDA device, run the K steps as one captured CUDA graph, replayed at every
            call of the same kind (:mod:`lebm.recording.cache`); False runs them eagerly. The
            numbers are those of the eager chain; on other devices chains always run eagerly.
    """

    capturable = True

    def __init__(
        self,
        n_steps: int = 60,
        step_size: float = 0.4,
        noise_std: float | None = None,
        grad_clip: float | None = None,
        form: Literal["code", "paper"] = "code",
        cuda_graph: bool = True,
    ) -> None:
        n_steps = arguments.whole("Langevin", "n_steps", n_steps)
        form = arguments.one_of("Langevin", "form", form, ("code", "paper"))
        if form == "code":
            step_size = arguments.step_size("Langevin", step_size)
        else:  # the paper form's step is the drift itself: s, not s^2 / 2
            step_size = arguments.number(
                "Langevin", "step_size", step_size, above=0, at_most=arguments.FLOAT32_MAX / 2, why_at_most=_FLOAT32
            )
        if noise_std is not None:
            noise_std = arguments.number(
                "Langevin", "noise_std", noise_std, at_least=0, at_most=arguments.FLOAT32_MAX, why_at_most=_FLOAT32
            )
        if grad_clip is not None:
            grad_clip = arguments.number("Langevin", "grad_clip", grad_clip, above=0)
        cuda_graph = arguments.flag("Langevin", "cuda_graph", cuda_graph)
        vanishing = TINY_STEP if form == "code" else TINY_STEP**2 / 2
        if step_size < vanishing and n_steps > 0 and (noise_std is None or noise_std < TINY_STEP):
            warn_user(
                f"Langevin step_size {step_size:g} is below {vanishing:g}: in float32 its steps (drift "
                f"{'s^2/2' if form == 'code' else 's'} x gradient, noise {'s' if form == 'code' else 'sqrt(2s)'}) "
                "round away beside states of order 1, so the chain returns its start"
            )
        if n_steps == 0:
            warn_user(
                "Langevin with n_steps=0 returns its starting states unchanged (for a prior or posterior chain: the "
                "initial noise); give n_steps >= 1 unless that is what you want"
            )
        self.n_steps = int(n_steps)
        self.step_size = float(step_size)
        self.noise_std = noise_std
        self.grad_clip = grad_clip
        self.form: Literal["code", "paper"] = form
        self.cuda_graph = cuda_graph

    def capture_allowed(self) -> bool:
        """A chain of no steps has nothing to capture."""
        return super().capture_allowed() and self.n_steps > 0

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

    def run(self, target: ChainTarget, z: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """``n_steps`` updates ``z <- z - drift * grad U(z) + noise * eps`` of the states ``z``
        ``(B, *shape)``, in place; ``eps`` is drawn from ``generator``."""
        drift, noise = self.drift, self.noise
        eps = torch.empty_like(z) if noise > 0 else None  # one noise buffer, refilled each step
        for _ in range(self.n_steps):
            grad = target.grad(z)
            if self.grad_clip is not None:
                norms = torch.linalg.vector_norm(grad.flatten(1), dim=1)
                scale = (self.grad_clip / (norms + 1e-12)).clamp(max=1.0)
                grad = grad * per_chain(scale, grad)
            z.add_(grad, alpha=-drift)
            if eps is not None:
                z.add_(eps.normal_(generator=generator), alpha=noise)
        return z
