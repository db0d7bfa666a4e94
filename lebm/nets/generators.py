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

    DAMC's official generators (Yu et al. 2023, ``workspace/src/diffusion_net.py``) end in a 3x3
    stride-1 conv after one more up-sampling hidden layer (``last_layer="same"``), start at an 8x8
    map on CIFAR-10 (``first_size=8``) and keep PyTorch's default initialisation (``init="default"``)::

        CIFAR-10, ngf 128:  ConvT(128 -> 1024, 8, 1, 0) 8 -> 512 16 -> 256 32 -> ConvT(256 -> 3, 3, 1, 1) 32
        MNIST,    ngf 128:  ConvT(8 -> 1024, 7, 1, 0) 7 -> 512 14 -> 256 28 -> ConvT(256 -> 1, 3, 1, 1) 28

    Args:
        latent_dim: nz.
        channels: output image channels.
        image_size: 28, or a power of two >= 8.
        ngf: base width.
        hidden_channels: explicit hidden widths, one per transposed conv before the output.
        activation: activation between layers.
        first_size: the first map's size (default 4; 7 for 28 px); ``image_size / first_size``
            must be a power of two.
        last_layer: ``"up"``: the output layer doubles the size (DCGAN); ``"same"``: a 3x3 stride-1
            conv after the last up-sampling hidden layer.
        init: ``"xavier"`` (Xavier-normal conv weights, LEBM's code) or ``"default"`` (PyTorch's).
    """

    def __init__(
        self,
        latent_dim: int = 100,
        channels: int = 3,
        image_size: int = 32,
        ngf: int = 64,
        hidden_channels: Sequence[int] | None = None,
        activation: str = "leaky_relu",
        first_size: int | None = None,
        last_layer: str = "up",
        init: str = "xavier",
    ) -> None:
        super().__init__()
        if last_layer not in ("up", "same"):
            raise ValueError(f"DCGANGenerator last_layer must be 'up' or 'same', got {last_layer!r}")
        if init not in ("xavier", "default"):
            raise ValueError(f"DCGANGenerator init must be 'xavier' or 'default', got {init!r}")
        if first_size is None:
            first_size = 7 if image_size == 28 else 4
        ratio = image_size // first_size if first_size >= 1 else 0
        if first_size < 1 or ratio * first_size != image_size or ratio < 1 or ratio & (ratio - 1):
            raise ValueError(
                f"DCGANGenerator image_size {image_size} must be first_size {first_size} times a power of two "
                "(image_size 28 or a power of two >= 8 with the default first_size)"
            )
        doublings = int(math.log2(ratio))
        # "up": the output layer is one of the doublings; "same": every doubling is a hidden layer
        n_hidden = doublings if last_layer == "up" else doublings + 1
        if n_hidden < 1:
            raise ValueError(f"DCGANGenerator needs image_size > first_size with last_layer 'up', got {image_size}")
        if hidden_channels is None:
            hidden_channels = [ngf * 2 ** (n_hidden - i) for i in range(n_hidden)]
        if len(hidden_channels) != n_hidden:
            raise ValueError(
                f"DCGANGenerator needs {n_hidden} hidden_channels for image_size {image_size}, "
                f"got {list(hidden_channels)}"
            )
        layers: list[nn.Module] = [LatentProjection(latent_dim, hidden_channels[0], first_size, 1, 0)]
        for fan_in, fan_out in zip(hidden_channels[:-1], hidden_channels[1:], strict=False):
            layers += [make_activation(activation), nn.ConvTranspose2d(fan_in, fan_out, 4, 2, 1)]
        output = (4, 2, 1) if last_layer == "up" else (3, 1, 1)
        layers += [make_activation(activation), nn.ConvTranspose2d(hidden_channels[-1], channels, *output), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.latent_dim = latent_dim
        if init == "xavier":
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
