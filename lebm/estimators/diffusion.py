"""The ε-prediction loss of a latent diffusion model (DAMC's amortizer, Yu et al., NeurIPS 2023,
arXiv 2310.03218; ``calculate_loss`` of ``_netQ_U`` in the official repository's
``workspace/src/diffusion_net.py``)."""

from __future__ import annotations

import torch
from torch import Tensor

from lebm.samplers.diffusion import Denoiser, LogSNRSchedule, forward_diffuse


def denoising_loss(
    denoise: Denoiser, z0: Tensor, schedule: LogSNRSchedule, *, generator: torch.Generator | None = None
) -> Tensor:
    """The continuous-time, unweighted ε-prediction loss per example, ``(B, D) -> (B,)``::

        L_i = 1/2 || eps_i - denoise(alpha_u z0_i + sigma_u eps_i, lambda(u_i)) ||^2     (summed over D)

    with ``u_i ~ U(0, 1)`` and ``eps_i ~ N(0, I)`` drawn from ``generator`` (``u`` first, then
    ``eps``: :func:`lebm.samplers.diffusion.forward_diffuse`). The continuous-time diffusion ELBO
    weights ``L_i`` by ``-dlambda/du``; the official code drops the weight, and so does this loss.

    Gradients reach ``denoise``'s parameters; ``z0`` (the teacher samples, e.g. chain outputs) is
    read as given: detach it to keep gradients from it.

    Args:
        denoise: ``(z_t (B, D), logsnr (B,)) -> eps_hat (B, D)``.
        z0: clean latents ``(B, D)``.
        schedule: the log-SNR schedule ``lambda(u)``.
        generator: the stream ``u`` and ``eps`` come from.
    """
    z_t, logsnr, eps = forward_diffuse(z0, schedule, generator=generator)
    return 0.5 * (eps - denoise(z_t, logsnr)).square().flatten(1).sum(1)
