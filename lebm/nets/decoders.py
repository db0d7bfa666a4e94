"""Observation models ``p(x|z)``: a generator plus its likelihood.

The learning methods only call ``nll(x, z)``, ``decode(z)`` and ``metrics(x, z)``, so they never
need to know whether ``x`` is an image, a vector or a sentence.
"""

from __future__ import annotations

from torch import Tensor, nn

from lebm.config import Configurable


class GaussianDecoder(nn.Module, Configurable):
    """``x = g(z) + eps``, ``eps ~ N(0, sigma^2 I)``.

    ``nll(x, z) = ||x - g(z)||^2 / (2 sigma^2)`` per example ``(B,)``, without the constant
    ``D/2 log(2 pi sigma^2)``. LEBM uses sigma = 0.3 on images in [-1, 1].

    Args:
        net: the generator ``g``: ``(B, latent_dim) -> (B, *x_shape)``.
        sigma: the observation noise standard deviation.
    """

    #: the per-example metrics ``metrics(x, z)`` reports
    metric_names = ("mse",)

    def __init__(self, net: nn.Module, sigma: float = 0.3) -> None:
        super().__init__()
        if sigma <= 0:
            raise ValueError(f"GaussianDecoder sigma must be > 0, got {sigma}")
        self.net = net
        self.sigma = float(sigma)

    def decode(self, z: Tensor) -> Tensor:
        """The mean ``g(z)``: ``(B, latent_dim) -> (B, *x_shape)``."""
        return self.net(z)

    forward = decode

    def nll(self, x: Tensor, z: Tensor) -> Tensor:
        """``-log p(x|z) + const``: ``(B, *x_shape), (B, latent_dim) -> (B,)``."""
        return self.squared_error(x, z) / (2 * self.sigma**2)

    def squared_error(self, x: Tensor, z: Tensor) -> Tensor:
        """``||x - g(z)||^2`` per example: ``(B, *x_shape), (B, latent_dim) -> (B,)`` (``2 sigma^2 nll``)."""
        return (x - self._mean(x, z)).square().flatten(1).sum(1)

    def _mean(self, x: Tensor, z: Tensor) -> Tensor:
        """``g(z)``, checked to have the shape of ``x`` (no silent broadcasting)."""
        mean = self.net(z)
        if mean.shape != x.shape:
            raise ValueError(
                f"the generator makes {tuple(mean.shape)} from latents {tuple(z.shape)} but the data are "
                f"{tuple(x.shape)}: make the generator's output shape (channels, image size) match the data"
            )
        return mean

    def metrics(self, x: Tensor, z: Tensor) -> dict[str, Tensor]:
        """Per-example reconstruction metrics ``(B,)``: ``mse``, the mean over pixels of
        ``(x - g(z))^2`` (the papers' per-pixel MSE, for images in [-1, 1])."""
        return {"mse": (x - self._mean(x, z)).square().flatten(1).mean(1)}
