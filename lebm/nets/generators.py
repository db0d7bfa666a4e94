"""Generator networks ``g(z)``: latent vectors to observation means."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from lebm.config import Configurable
from lebm.nets.layers import LatentProjection, make_activation, xavier_init_


class DCGANGenerator(nn.Module, Configurable):
    """DCGAN-style transposed-conv generator ``(B, latent_dim) -> (B, channels, S, S)`` in [-1, 1].

    Layout (S = 32, ngf = 64 is LEBM's SVHN net)::

        ConvT(latent_dim -> c0, 4, 1, 0)            1 -> 4   (S = 28: kernel 7, 1 -> 7; run as a
                                                     matrix product: ``LatentProjection``)
        ConvT(c_i -> c_i / 2, 4, 2, 1) ...          doubling the size, halving the channels
        ConvT(c_last -> channels, 4, 2, 1) - tanh   -> S

    with LeakyReLU(0.2) between layers, no normalisation, Xavier-normal conv weights and PyTorch's
    default biases (the official ``_netG``: bias on, since it has no BatchNorm). By default
    ``c0 = ngf * 2^(n_up)`` with ``n_up = log2(S / 4)`` up-sampling layers, giving 512-256-128-3
    for S = 32 and 2048-1024-512-256-128-3 for S = 128 with ngf = 64 (CelebA-128's net). Pass
    ``hidden_channels`` to set every hidden width explicitly.

    Args:
        latent_dim: nz.
        channels: output image channels.
        image_size: 28, or a power of two >= 8.
        ngf: base width.
        hidden_channels: explicit hidden widths, one per transposed conv before the output.
        activation: activation between layers.
    """

    def __init__(
        self,
        latent_dim: int = 100,
        channels: int = 3,
        image_size: int = 32,
        ngf: int = 64,
        hidden_channels: Sequence[int] | None = None,
        activation: str = "leaky_relu",
    ) -> None:
        super().__init__()
        if image_size == 28:
            first_kernel, n_up = 7, 2
        elif image_size >= 8 and image_size & (image_size - 1) == 0:
            first_kernel, n_up = 4, int(math.log2(image_size // 4))
        else:
            raise ValueError(f"DCGANGenerator image_size must be 28 or a power of two >= 8, got {image_size}")
        if hidden_channels is None:
            hidden_channels = [ngf * 2 ** (n_up - i) for i in range(n_up)]
        if len(hidden_channels) != n_up:
            raise ValueError(
                f"DCGANGenerator needs {n_up} hidden_channels for image_size {image_size}, got {list(hidden_channels)}"
            )
        layers: list[nn.Module] = [LatentProjection(latent_dim, hidden_channels[0], first_kernel, 1, 0)]
        for fan_in, fan_out in zip(hidden_channels[:-1], hidden_channels[1:], strict=False):
            layers += [make_activation(activation), nn.ConvTranspose2d(fan_in, fan_out, 4, 2, 1)]
        layers += [make_activation(activation), nn.ConvTranspose2d(hidden_channels[-1], channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.latent_dim = latent_dim
        xavier_init_(self)

    def forward(self, z: Tensor) -> Tensor:
        """``g(z)``: ``(B, latent_dim)`` -> images ``(B, channels, image_size, image_size)`` in [-1, 1]."""
        return self.net(z.view(z.shape[0], -1, 1, 1))


class MLPGenerator(nn.Module, Configurable):
    """MLP generator ``(B, latent_dim) -> (B, *out_shape)``.

    ``Linear - act - ... - Linear`` then the optional output activation (``tanh`` for images in
    [-1, 1], ``None`` for unbounded data such as low-dimensional toys).
    """

    def __init__(
        self,
        latent_dim: int,
        out_shape: Sequence[int],
        hidden: int = 256,
        depth: int = 2,
        activation: str = "leaky_relu",
        out_activation: str | None = "tanh",
    ) -> None:
        super().__init__()
        self.out_shape = tuple(out_shape)
        widths = [latent_dim] + [hidden] * depth
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=False):
            layers += [nn.Linear(fan_in, fan_out), make_activation(activation)]
        layers.append(nn.Linear(widths[-1], math.prod(self.out_shape)))
        if out_activation is not None:
            layers.append(make_activation(out_activation))
        self.net = nn.Sequential(*layers)
        self.latent_dim = latent_dim

    def forward(self, z: Tensor) -> Tensor:
        """``g(z)``: ``(B, latent_dim)`` -> ``(B, *out_shape)`` (in [-1, 1] with the default tanh)."""
        return self.net(z.flatten(1)).view(z.shape[0], *self.out_shape)
