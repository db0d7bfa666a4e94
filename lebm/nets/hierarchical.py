"""Multi-layer (VLAE-style) generators: one latent group per layer of the generator.

The joint hierarchical EBM (Cui, Wu & Han, ICCV 2023) generates from ``z = [z_1, ..., z_L]``
(bottom first): the top group makes the coarsest feature map, every lower group is injected into
a finer one. The generator takes the flat concatenation ``(B, sum(group_sizes))`` like every other
lebm generator, and says how to split it (``groups``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from lebm.config import Configurable
from lebm.nets.latents import LatentGroups
from lebm.nets.layers import xavier_init_

Injection = Literal["concat", "add"]


class HierarchicalGenerator(nn.Module, Configurable):
    """A VLAE-style generator ``(B, sum(group_sizes)) -> (B, channels, S, S)`` in [-1, 1].

    With ``L`` groups there are ``L`` feature maps, of sides ``S / 2^(L-1), ..., S / 2, S`` and
    channels ``widths`` (top first). The top group ``z_L`` makes the first map; group ``z_i``
    (``i = L-1 ... 1``) is injected into map ``L - i``; the last map (full resolution) gets no
    latent and becomes the image::

        h = MLP(z_L)                          Linear-act per top_hidden width, Linear(-> C_0 S_0^2)-act, reshape
        for each lower group z_i, map k:      p = act(Linear(z_i -> C_k S_k^2)), reshaped to h's shape
            concat:  h = act(ConvT3x3(cat[h, p]: 2 C_k -> C_k))       (the official 5-layer train_fid.py)
            add:     h = h + p
            h = act(ConvT4x4 s2(C_k -> C_k+1)) ; h = act(ConvT3x3(C_k+1 -> C_k+1))   doubles the side
        x = tanh(ConvT3x3(h: C_L-1 -> channels))

    LeakyReLU(0.2), bias-free transposed convs, Xavier-normal conv weights, PyTorch's default
    Linear init (as the official code). The official SVHN FID model (``train_fid.py``, Cui, Wu & Han,
    ICCV 2023) is
    ``HierarchicalGenerator([10] * 5, 3, 32, widths=[1024, 512, 256, 256, 128],
    top_hidden=[2048, 2048], injection="concat")``: maps 2 -> 4 -> 8 -> 16 -> 32.

    Args:
        group_sizes: latent size of each layer, bottom (finest, ``z_1``) first.
        channels: image channels.
        image_size: image side; divisible by ``2^(L-1)``.
        widths: channels of the ``L`` feature maps, top (coarsest) first.
        top_hidden: hidden widths of the top group's MLP (may be empty).
        injection: ``"concat"`` (concatenate along channels, then a 3x3 transposed conv back to
            the map's width) or ``"add"`` (add to the map).
        negative_slope: LeakyReLU slope.
    """

    def __init__(
        self,
        group_sizes: Sequence[int],
        channels: int = 3,
        image_size: int = 32,
        widths: Sequence[int] = (1024, 512, 256, 256, 128),
        top_hidden: Sequence[int] = (2048, 2048),
        injection: Injection = "concat",
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        self.groups = LatentGroups(group_sizes)
        n = len(self.groups)
        widths = [int(w) for w in widths]
        if len(widths) != n:
            raise ValueError(
                f"HierarchicalGenerator needs one width per latent group (feature maps top first): {n} groups "
                f"{self.groups.sizes}, got widths {widths}"
            )
        if image_size % 2 ** (n - 1):
            raise ValueError(
                f"HierarchicalGenerator with {n} groups doubles the map size {n - 1} times: image_size must be "
                f"divisible by {2 ** (n - 1)}, got {image_size}"
            )
        if injection not in ("concat", "add"):
            raise ValueError(f"HierarchicalGenerator injection must be 'concat' or 'add', got {injection!r}")
        self.injection = injection
        self.sides = [image_size // 2 ** (n - 1 - k) for k in range(n)]
        self.widths = widths

        def act() -> nn.Module:
            return nn.LeakyReLU(negative_slope)

        top: list[nn.Module] = []
        fan_in = self.groups.sizes[-1]
        for hidden in top_hidden:
            top += [nn.Linear(fan_in, hidden), act()]
            fan_in = hidden
        top += [nn.Linear(fan_in, widths[0] * self.sides[0] ** 2), act()]
        self.top = nn.Sequential(*top)
        self.projections = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for k in range(n - 1):
            group = n - 2 - k  # the group injected into map k, from z_{L-1} down to z_1
            width, side, finer = widths[k], self.sides[k], widths[k + 1]
            self.projections.append(nn.Sequential(nn.Linear(self.groups.sizes[group], width * side * side), act()))
            block: list[nn.Module] = []
            if injection == "concat":
                block += [nn.ConvTranspose2d(2 * width, width, 3, 1, 1, bias=False), act()]
            block += [
                nn.ConvTranspose2d(width, finer, 4, 2, 1, bias=False),
                act(),
                nn.ConvTranspose2d(finer, finer, 3, 1, 1, bias=False),
                act(),
            ]
            self.blocks.append(nn.Sequential(*block))
        self.output = nn.Sequential(nn.ConvTranspose2d(widths[-1], channels, 3, 1, 1, bias=False), nn.Tanh())
        self.latent_dim = self.groups.total
        self.channels, self.image_size = int(channels), int(image_size)
        xavier_init_(self)

    def forward(self, z: Tensor) -> Tensor:
        """``(B, latent_dim)`` -> ``(B, channels, image_size, image_size)``."""
        parts = self.groups.split(z.flatten(1))
        h = self.top(parts[-1]).view(z.shape[0], self.widths[0], self.sides[0], self.sides[0])
        for k, (projection, block) in enumerate(zip(self.projections, self.blocks, strict=True)):
            p = projection(parts[len(parts) - 2 - k]).view_as(h)
            h = block(torch.cat([h, p], 1) if self.injection == "concat" else h + p)
        return self.output(h)
