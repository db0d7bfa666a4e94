"""VLAE-structured nets for small images (the MNIST model of Zhao, Song & Ermon 2017).

The ICCV 2023 joint hierarchical EBM (Cui, Wu & Han, arXiv 2310.09604) says its MNIST model
follows the VLAE MNIST structure: convolutional levels of 64 and 128 channels, 1024-wide fully
connected ladders, BatchNorm, each lower latent added into the generator through a gate, a sigmoid
output. These nets are written from that description (not from the VLAE code); the per-dataset
details are not confirmed by the paper. Select them for the hierarchical MNIST recipes with
``-c recipes/hierarchical/_mnist_vlae.yaml`` after the MNIST recipe (``docs/hierarchical.md``).

Latents are flat ``(B, sum(group_sizes))``, groups bottom (finest, ``z_1``) first, as for every
lebm generator; images are in lebm's [-1, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lebm.config import Configurable
from lebm.nets.encoders import DiagonalGaussian, InferenceNetwork
from lebm.nets.latents import LatentGroups
from lebm.nets.layers import make_activation, xavier_init_


def _hidden_linear(fan_in: int, fan_out: int, batch_norm: bool, activation: str) -> nn.Sequential:
    """``Linear - [BatchNorm1d] - act``; the Linear has no bias under BatchNorm (it would cancel)."""
    layers: list[nn.Module] = [nn.Linear(fan_in, fan_out, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(fan_out))
    layers.append(make_activation(activation))
    return nn.Sequential(*layers)


def _hidden_conv(fan_in: int, fan_out: int, batch_norm: bool, activation: str, transposed: bool) -> nn.Sequential:
    """``[Conv|ConvT] 4x4 stride 2 - [BatchNorm2d] - act``: halves (conv) or doubles (transposed) the side."""
    conv = nn.ConvTranspose2d if transposed else nn.Conv2d
    layers: list[nn.Module] = [conv(fan_in, fan_out, 4, 2, 1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(fan_out))
    layers.append(make_activation(activation))
    return nn.Sequential(*layers)


def _check_common(
    name: str, groups: LatentGroups, channels: int, image_size: int, conv_widths: Sequence[int], fc_width: int
) -> list[int]:
    """Check the options shared by the VLAE generator and encoder; the conv widths as ints."""
    if len(groups) < 2:
        raise ValueError(
            f"{name} needs at least 2 latent groups (group_sizes: the bottom one joins the convolutional stage, "
            f"the top one starts the fully connected stage), got {groups.sizes}"
        )
    widths = [int(width) for width in conv_widths]
    if not widths or any(width < 1 for width in widths):
        raise ValueError(f"{name} conv_widths must be a non-empty list of positive widths, got {list(conv_widths)}")
    if int(fc_width) < 1:
        raise ValueError(f"{name} fc_width must be >= 1, got {fc_width}")
    if int(channels) < 1:
        raise ValueError(f"{name} channels must be >= 1, got {channels}")
    factor = 2 ** len(widths)
    if int(image_size) < factor or int(image_size) % factor:
        raise ValueError(
            f"{name} halves the image side once per conv width ({len(widths)} conv_widths {widths}): image_size "
            f"must be a positive multiple of {factor}, got {image_size}"
        )
    return widths


class VLAEGenerator(nn.Module, Configurable):
    """A VLAE-structured generator ``(B, sum(group_sizes)) -> (B, channels, S, S)`` in [-1, 1].

    With ``L >= 2`` groups (MNIST: 3 groups ``z_1, z_2, z_3``), ``conv_widths`` ``(w_1, ..., w_n)``
    (finest first, MNIST ``(64, 128)``) and ``F = fc_width`` (1024), the map side ``s = S / 2^n``
    (28 px: 7)::

        h = FC(z_L -> F) ; h = FC(F -> F)                      the top group: fully connected layers
        for z_i, i = L-1 ... 2:                                the middle groups join the FC stage
            h = h + g_i * FC(z_i -> F) ; h = FC(F -> F)        (MNIST: z_2)
        h = FC(F -> w_n s^2), reshaped to (w_n, s, s)          7 x 7 x 128
        h = h + g_1 * FC(z_1 -> w_n s^2), reshaped              the bottom group joins the conv stage
        h = ConvT(w_n -> w_n-1) ... ConvT(w_2 -> w_1)           4x4 stride 2: 7 -> 14 (128 -> 64)
        x = 2 * sigmoid(ConvT(w_1 -> channels)) - 1             4x4 stride 2: 14 -> 28

    ``FC`` and every hidden ``ConvT`` are followed by BatchNorm (``batch_norm``; their bias is
    dropped then) and the activation; the output ConvT has a bias and no BatchNorm.

    **Additive gated injection.** Each lower group ``z_i`` is mapped by its own
    ``Linear - BatchNorm - act`` to the shape of the feature it joins and added, scaled by a learned
    gate ``g_i``: one parameter per unit of the FC stage, one per channel of the conv map (shared
    over its pixels). The gates start at ``gate_init`` (1.0: the injection starts fully active, a
    plain sum); a gate at 0 cuts its group off. ``gates[i]`` is the gate of group ``i`` (bottom
    first: ``gates[0]`` is ``z_1``'s), ``injections[i]`` its mapping.

    **Output.** VLAE's MNIST model ends in a sigmoid on [0, 1] pixels; on lebm's [-1, 1] pixels that
    is ``x = 2 * sigmoid(a) - 1`` (= ``tanh(a / 2)``) of the last layer's output ``a``.

    ReLU by default (the usual DCGAN-style choice for a generator), PyTorch's default Linear
    init, Xavier-normal conv weights as the other lebm nets.

    Args:
        group_sizes: latent size of each group, bottom (finest, ``z_1``) first; at least 2.
        channels: image channels.
        image_size: image side; a multiple of ``2^len(conv_widths)`` (28 with two conv widths).
        conv_widths: channels of the convolutional maps, finest first (the last is the map the
            FC stage is reshaped to).
        fc_width: width of the fully connected stage.
        batch_norm: BatchNorm after every hidden linear and transposed conv layer.
        activation: hidden activation (``relu``, ``leaky_relu`` (slope 0.2), ...).
        gate_init: initial value of every gate.
    """

    def __init__(
        self,
        group_sizes: Sequence[int],
        channels: int = 1,
        image_size: int = 28,
        conv_widths: Sequence[int] = (64, 128),
        fc_width: int = 1024,
        batch_norm: bool = True,
        activation: str = "relu",
        gate_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.groups = LatentGroups(group_sizes)
        widths = _check_common("VLAEGenerator", self.groups, channels, image_size, conv_widths, fc_width)
        make_activation(activation)  # an unknown name fails here, naming the choices
        n, fc = len(self.groups), int(fc_width)
        self.side = int(image_size) // 2 ** len(widths)
        self.map_shape = (widths[-1], self.side, self.side)
        map_size = widths[-1] * self.side**2
        sizes = self.groups.sizes

        def linear(fan_in: int, fan_out: int) -> nn.Sequential:
            return _hidden_linear(fan_in, fan_out, batch_norm, activation)

        self.top = nn.Sequential(linear(sizes[-1], fc), linear(fc, fc))
        # injections[i] maps group i to the feature it joins: the conv map for z_1, the FC stage above
        self.injections = nn.ModuleList([linear(sizes[0], map_size)] + [linear(size, fc) for size in sizes[1:-1]])
        self.gates = nn.ParameterList(
            [nn.Parameter(torch.full((widths[-1],), float(gate_init)))]
            + [nn.Parameter(torch.full((fc,), float(gate_init))) for _ in range(n - 2)]
        )
        # fc_blocks[i - 1] follows the injection of group i (i = 1 ... L-2, 0-based), run top-down
        self.fc_blocks = nn.ModuleList(linear(fc, fc) for _ in range(n - 2))
        self.to_map = linear(fc, map_size)
        coarse_first = widths[::-1]
        self.deconvs = nn.Sequential(
            *(
                _hidden_conv(fan_in, fan_out, batch_norm, activation, transposed=True)
                for fan_in, fan_out in zip(coarse_first[:-1], coarse_first[1:], strict=True)
            )
        )
        self.output = nn.ConvTranspose2d(widths[0], int(channels), 4, 2, 1)
        self.conv_widths, self.fc_width, self.batch_norm = widths, fc, bool(batch_norm)
        self.latent_dim = self.groups.total
        self.channels, self.image_size = int(channels), int(image_size)
        xavier_init_(self)

    def forward(self, z: Tensor) -> Tensor:
        """``(B, latent_dim)`` -> ``(B, channels, image_size, image_size)`` in [-1, 1]."""
        parts = self.groups.split(z.flatten(1))
        h = self.top(parts[-1])
        for i in range(len(parts) - 2, 0, -1):  # middle groups, top-down: z_{L-1} ... z_2
            h = self.fc_blocks[i - 1](h + self.gates[i] * self.injections[i](parts[i]))
        h = self.to_map(h).view(-1, *self.map_shape)
        p = self.injections[0](parts[0]).view(-1, *self.map_shape)
        h = h + self.gates[0].view(1, -1, 1, 1) * p
        return 2 * torch.sigmoid(self.output(self.deconvs(h))) - 1


class VLAELadderEncoder(InferenceNetwork):
    """The VLAE-structured ladder inference network matching :class:`VLAEGenerator`.

    A bottom-up trunk of ``Conv 4x4 stride 2`` levels (``conv_widths``, MNIST 64 then 128: 28 ->
    14 -> 7), flattened, then ``L - 1`` fully connected levels of width ``F = fc_width`` (1024).
    The bottom group's head reads the conv features, group ``k`` (``k >= 2``) reads FC level
    ``k - 1`` (so the top group reads the deepest)::

        r_0 = flatten(conv_n(... conv_1(x)))      (B, w_n s^2)
        r_k = FC(r_{k-1} -> F),  k = 1 ... L-1
        q(z_k | x) = N(mu, exp(logvar)),  [mu, logvar] = Linear(F -> 2 size_k)(FC_branch_k(r_{k-1}))

    Each head is its own 1024-wide FC ladder branch followed by a Linear to the mean and the
    log-variance. Every hidden conv and FC layer (trunk and branches) is followed by BatchNorm
    (``batch_norm``; their bias is dropped then) and the activation (LeakyReLU 0.2 by default);
    the heads' Linear has a bias. Xavier-normal conv weights, PyTorch's default Linear init.

    ``forward`` returns one :class:`DiagonalGaussian` over the concatenated latent (bottom first),
    laid out as ``self.groups``.

    Args:
        group_sizes: latent size of each group, bottom first; at least 2.
        channels: image channels.
        image_size: image side; a multiple of ``2^len(conv_widths)``.
        conv_widths: channels of the conv levels, finest first.
        fc_width: width of the FC levels and of the heads' branches.
        batch_norm: BatchNorm after every hidden layer.
        activation: hidden activation.
    """

    def __init__(
        self,
        group_sizes: Sequence[int],
        channels: int = 1,
        image_size: int = 28,
        conv_widths: Sequence[int] = (64, 128),
        fc_width: int = 1024,
        batch_norm: bool = True,
        activation: str = "leaky_relu",
    ) -> None:
        super().__init__()
        self.groups = LatentGroups(group_sizes)
        widths = _check_common("VLAELadderEncoder", self.groups, channels, image_size, conv_widths, fc_width)
        make_activation(activation)
        n, fc = len(self.groups), int(fc_width)
        fan_ins = [int(channels), *widths[:-1]]
        self.convs = nn.Sequential(
            *(
                _hidden_conv(fan_in, width, batch_norm, activation, transposed=False)
                for fan_in, width in zip(fan_ins, widths, strict=True)
            )
        )
        conv_features = widths[-1] * (int(image_size) // 2 ** len(widths)) ** 2
        level_sizes = [conv_features] + [fc] * (n - 1)  # what head k reads: r_0 (conv), r_1 ... r_{L-1}
        self.fc_levels = nn.ModuleList(_hidden_linear(level_sizes[k], fc, batch_norm, activation) for k in range(n - 1))
        self.branches = nn.ModuleList(_hidden_linear(level_sizes[k], fc, batch_norm, activation) for k in range(n))
        self.heads = nn.ModuleList(nn.Linear(fc, 2 * size) for size in self.groups.sizes)
        self.conv_widths, self.fc_width, self.batch_norm = widths, fc, bool(batch_norm)
        self.latent_dim = self.groups.total
        self.channels, self.image_size = int(channels), int(image_size)
        xavier_init_(self)

    def forward(self, x: Tensor) -> DiagonalGaussian:
        """``q(z|x)`` of images ``(B, channels, image_size, image_size)``: one
        :class:`DiagonalGaussian` over ``(B, sum(group_sizes))``, the groups bottom first."""
        r = self.convs(x).flatten(1)
        means, logvars = [], []
        for k, (branch, head) in enumerate(zip(self.branches, self.heads, strict=True)):
            mean, logvar = head(branch(r)).chunk(2, dim=1)
            means.append(mean)
            logvars.append(logvar)
            if k < len(self.fc_levels):
                r = self.fc_levels[k](r)
        return DiagonalGaussian(torch.cat(means, 1), torch.cat(logvars, 1))
