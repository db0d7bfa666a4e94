"""The generator's maximum-likelihood loss at given latents."""

from __future__ import annotations

from torch import Tensor

from lebm.estimators.types import Decoder


def reconstruction_loss(decoder: Decoder, x: Tensor, z: Tensor) -> Tensor:
    """``mean_i -log p(x_i | z_i)``: ``(B, *x_shape), (B, latent_dim) -> ()``.

    At posterior samples ``z ~ p(z|x)`` this is a Monte-Carlo estimate of the negative of the
    generator's log-likelihood gradient target ``E_{p(z|x)}[log p_beta(x|z)]``. For a Gaussian
    decoder it equals ``sum ||x - g(z)||^2 / (2 sigma^2 B)``; the papers' code minimises the
    plain SSE/B, the same direction scaled by ``2 sigma^2`` (Adam is invariant to that scale).

    Gradients reach ``z`` whenever ``z`` requires them: the variational bound back-propagates
    through an encoder's reparameterised sample; chains return detached states, so a loss at
    chain samples trains the decoder only. Detach ``z`` yourself to stop the gradient.
    """
    return decoder.nll(x, z).mean()
