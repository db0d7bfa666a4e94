"""Inference networks ``q(z|x)``: diagonal Gaussians over the latent, computed from ``x``.

The contract: an :class:`InferenceNetwork` maps observations ``(B, *x_shape)`` to a
:class:`DiagonalGaussian` over flat latents ``(B, latent_dim)``. A method uses it to start
posterior chains (Dual-MCMC: a reparameterised sample in training, the mean at test time), or as
the posterior itself (the joint hierarchical method's variational bound).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lebm.config import Configurable
from lebm.nets.latents import LatentGroups
from lebm.nets.layers import make_activation, xavier_init_

_LOG_2PI = math.log(2 * math.pi)


class DiagonalGaussian:
    """``N(mean, diag exp(logvar))`` per example.

    Args:
        mean: ``(B, D)``.
        logvar: ``(B, D)`` log-variances (the log-variance parameterisation of the papers' code).
    """

    def __init__(self, mean: Tensor, logvar: Tensor) -> None:
        if mean.shape != logvar.shape:
            raise ValueError(f"mean {tuple(mean.shape)} and logvar {tuple(logvar.shape)} must have one shape")
        self.mean, self.logvar = mean, logvar

    @property
    def std(self) -> Tensor:
        """``exp(logvar / 2)`` ``(B, D)``."""
        return torch.exp(0.5 * self.logvar)

    def rsample(self, generator: torch.Generator | None = None) -> Tensor:
        """A reparameterised sample ``mean + std * eps`` ``(B, D)``, differentiable in mean and logvar."""
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def log_prob(self, z: Tensor) -> Tensor:
        """``log q(z)`` ``(B,)``, normalised: ``-1/2 sum_d [logvar + (z - mean)^2 / exp(logvar) + log 2 pi]``;
        ``z`` may carry leading sample dimensions, ``(K, B, D) -> (K, B)``."""
        return -0.5 * (self.logvar + (z - self.mean).square() * torch.exp(-self.logvar) + _LOG_2PI).sum(-1)

    def nll(self, z: Tensor) -> Tensor:
        """``-log q(z)`` ``(B,)``."""
        return -self.log_prob(z)

    def kl_to_standard_normal(self) -> Tensor:
        """The closed-form ``KL(q || N(0, I))`` ``(B,)``: ``1/2 sum_d [exp(logvar) + mean^2 - 1 - logvar]``."""
        return 0.5 * (self.logvar.exp() + self.mean.square() - 1.0 - self.logvar).sum(1)

    def detach(self) -> DiagonalGaussian:
        """The same distribution with ``mean`` and ``logvar`` detached from the graph."""
        return DiagonalGaussian(self.mean.detach(), self.logvar.detach())

    def __getitem__(self, columns: slice) -> DiagonalGaussian:
        """The marginal over a slice of latent columns (e.g. one layer's group)."""
        return DiagonalGaussian(self.mean[:, columns], self.logvar[:, columns])


class InferenceNetwork(nn.Module, Configurable):
    """Base of inference networks: ``forward(x) -> DiagonalGaussian`` over ``(B, latent_dim)``."""

    latent_dim: int

    def forward(self, x: Tensor) -> DiagonalGaussian:  # pragma: no cover - interface
        """``q(z|x)``: observations ``(B, *x_shape)`` -> a :class:`DiagonalGaussian` over
        ``(B, latent_dim)``."""
        raise NotImplementedError


class MLPEncoder(InferenceNetwork):
    """An MLP ``q(z|x)`` for vectors or small images: ``flatten - (Linear - act) x depth - Linear(-> 2 D)``.

    Args:
        in_shape: the shape of one observation, e.g. ``[2]`` or ``[1, 8, 8]``.
        latent_dim: D.
        hidden: hidden width.
        depth: number of hidden layers.
        activation: activation name (see ``make_activation``).
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        latent_dim: int,
        hidden: int = 256,
        depth: int = 2,
        activation: str = "leaky_relu",
    ) -> None:
        super().__init__()
        widths = [math.prod(in_shape)] + [hidden] * depth
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=False):
            layers += [nn.Linear(fan_in, fan_out), make_activation(activation)]
        layers.append(nn.Linear(widths[-1], 2 * latent_dim))
        self.net = nn.Sequential(*layers)
        self.latent_dim = int(latent_dim)

    def forward(self, x: Tensor) -> DiagonalGaussian:
        """``q(z|x)`` of observations ``(B, *in_shape)`` (flattened): a :class:`DiagonalGaussian`
        over ``(B, latent_dim)``."""
        mean, logvar = self.net(x.flatten(1)).chunk(2, dim=1)
        return DiagonalGaussian(mean, logvar)


class ConvEncoder(InferenceNetwork):
    """The Dual-MCMC inference network (Cui & Han, NeurIPS 2023; the official ``nets.py``).

    Layout (``nif = 128``)::

        [stem: Conv3x3 s1 (C -> nif)]                         only with stem=True (CIFAR-10)
        Conv4x4 s2 ... halving the size, doubling the width    down to 4 x 4 (28 px: 7 x 7)
        mean, logvar heads: Conv(k x k, valid) -> latent_dim  each (k = the last map's size)

    LeakyReLU(0.2) after every conv but the heads, bias-free trunk convs, Xavier-normal init. The
    two heads have a bias (``head_bias``), as the official ``conv51``/``conv52``; the biases keep
    PyTorch's default initialisation, as there. The widths are ``nif * 2^i``: CIFAR-10 (32 px,
    ``stem=True``) gives 3x3 conv 3->128, then 128->256->512->1024; CelebA-64 (``stem=False``)
    four 4x4 convs 3->128->256->512->1024.

    State dicts without the head biases (lebm's bias-free heads before ``head_bias``) load into a
    ``head_bias=True`` encoder with the biases set to zero: exactly the net they were saved from.

    Args:
        latent_dim: nz (128 in the paper).
        channels: image channels.
        image_size: 28, or a power of two >= 8.
        nif: the first conv's width.
        stem: start with a 3x3 stride-1 conv.
        head_bias: give the mean and log-variance heads a bias (the official code).
    """

    def __init__(
        self,
        latent_dim: int = 128,
        channels: int = 3,
        image_size: int = 32,
        nif: int = 128,
        stem: bool = True,
        head_bias: bool = True,
    ) -> None:
        super().__init__()
        if image_size == 28:
            n_down, last = 2, 7
        elif image_size >= 8 and image_size & (image_size - 1) == 0:
            n_down, last = int(math.log2(image_size // 4)), 4
        else:
            raise ValueError(f"ConvEncoder image_size must be 28 or a power of two >= 8, got {image_size}")
        layers: list[nn.Module] = []
        width, fan_in = nif, channels
        if stem:
            layers += [nn.Conv2d(fan_in, width, 3, 1, 1, bias=False), nn.LeakyReLU(0.2)]
            fan_in, width = width, width * 2
        for _ in range(n_down):
            layers += [nn.Conv2d(fan_in, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2)]
            fan_in, width = width, width * 2
        self.features = nn.Sequential(*layers)
        self.mean_head = nn.Conv2d(fan_in, latent_dim, last, 1, 0, bias=head_bias)
        self.logvar_head = nn.Conv2d(fan_in, latent_dim, last, 1, 0, bias=head_bias)
        self.latent_dim = int(latent_dim)
        xavier_init_(self)

    def forward(self, x: Tensor) -> DiagonalGaussian:
        """``q(z|x)`` of images ``(B, channels, image_size, image_size)``: a :class:`DiagonalGaussian`
        over ``(B, latent_dim)``."""
        h = self.features(x)
        return DiagonalGaussian(self.mean_head(h).flatten(1), self.logvar_head(h).flatten(1))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """A state dict of bias-free heads (saved before ``head_bias``): zero biases, the old net."""
        for head in ("mean_head", "logvar_head"):
            weight, bias = f"{prefix}{head}.weight", f"{prefix}{head}.bias"
            if getattr(self, head).bias is not None and weight in state_dict and bias not in state_dict:
                saved = state_dict[weight]
                state_dict[bias] = torch.zeros(saved.shape[0], dtype=saved.dtype, device=saved.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class LadderEncoder(InferenceNetwork):
    """A ladder inference network with one Gaussian head per latent group (Cui, Wu & Han, ICCV 2023).

    A bottom-up trunk ``r_0 = x``, ``r_{k+1} = t_k(r_k)``; group ``k + 1`` reads level ``k``:
    ``q(z_{k+1} | x) = N(mu_k(b_k(r_k)), exp(logvar_k(b_k(r_k))))``, so ``z_1`` comes from the
    shallowest features. With ``separate_branches`` (the VLAE ladder of the official code) each
    level's head reads its own conv branch ``b_k``, shaped like the trunk block ``t_k`` but with
    its own weights; without, the head reads the trunk's output (``b_k = t_k``). Every block is
    ``Conv4x4 s2 (halves the size) - act - Conv3x3 - act``, bias-free, LeakyReLU (slope 0.01 as the
    official code), Xavier-normal init; head ``k``: ``Linear(flattened b_k(r_k) -> 2 size_k)``.
    With one conv level fewer than groups, the top group reads the last trunk output, flattened,
    through an MLP of widths ``top_hidden`` (the official SVHN model: levels 128-256-256-512 and a
    2048-1024-1024 MLP for ``z_5``).

    ``forward`` returns one :class:`DiagonalGaussian` over the concatenated latent (bottom
    first), laid out as ``self.groups``.

    Args:
        group_sizes: latent size of each group, bottom first.
        channels: image channels.
        image_size: image side.
        widths: output channels of each conv level (one per group, or one fewer).
        top_hidden: hidden widths of the top group's MLP (used when ``widths`` has one entry
            fewer than the groups; may be empty for a linear head).
        negative_slope: LeakyReLU slope.
        separate_branches: heads read their own conv branch (official) instead of the trunk.
    """

    def __init__(
        self,
        group_sizes: Sequence[int],
        channels: int = 3,
        image_size: int = 32,
        widths: Sequence[int] = (64, 128, 256),
        top_hidden: Sequence[int] = (),
        negative_slope: float = 0.01,
        separate_branches: bool = True,
    ) -> None:
        super().__init__()
        self.groups = LatentGroups(group_sizes)
        n_groups = len(self.groups)
        if len(widths) not in (n_groups, n_groups - 1):
            raise ValueError(
                f"LadderEncoder needs one conv width per latent group ({n_groups}) or one fewer (the top "
                f"group then reads an MLP), got widths {list(widths)}"
            )
        has_top_mlp = len(widths) == n_groups - 1

        def block(fan_in: int, width: int) -> nn.Module:
            return nn.Sequential(
                nn.Conv2d(fan_in, width, 4, 2, 1, bias=False),
                nn.LeakyReLU(negative_slope),
                nn.Conv2d(width, width, 3, 1, 1, bias=False),
                nn.LeakyReLU(negative_slope),
            )

        fan_ins = [channels, *widths[:-1]]
        # the trunk feeds the next level (and the top MLP); the last level's trunk block is only
        # needed when something reads its output
        n_trunk = len(widths) if (has_top_mlp or not separate_branches) else len(widths) - 1
        self.trunk = nn.ModuleList(block(fan_ins[k], widths[k]) for k in range(n_trunk))
        self.branches = (
            nn.ModuleList(block(fan_in, width) for fan_in, width in zip(fan_ins, widths, strict=True))
            if separate_branches
            else None
        )
        self.separate_branches = bool(separate_branches)
        self.n_levels, self.has_top_mlp = len(widths), has_top_mlp
        feature_sizes = self._feature_sizes(channels, image_size)
        self.heads = nn.ModuleList(
            nn.Linear(features, 2 * size)
            for features, size in zip(feature_sizes[: self.n_levels], self.groups.sizes, strict=False)
        )
        self.top_mlp: nn.Module | None = None
        if has_top_mlp:
            layers: list[nn.Module] = []
            fan = feature_sizes[-1]
            for hidden in top_hidden:
                layers += [nn.Linear(fan, hidden), nn.LeakyReLU(negative_slope)]
                fan = hidden
            self.top_mlp = nn.Sequential(*layers)
            self.heads.append(nn.Linear(fan, 2 * self.groups.sizes[-1]))
        self.latent_dim = self.groups.total
        xavier_init_(self)

    def _level_features(self, x: Tensor) -> list[Tensor]:
        """The flattened features each head reads, ``(B, F)`` each: one per conv level, then (with
        a top MLP) the last trunk output."""
        features, r = [], x
        for k in range(self.n_levels):
            if self.branches is None:
                r = self.trunk[k](r)
                features.append(r.flatten(1))
            else:
                features.append(self.branches[k](r).flatten(1))
                if k < len(self.trunk):
                    r = self.trunk[k](r)
        if self.has_top_mlp:
            features.append(r.flatten(1))
        return features

    def _feature_sizes(self, channels: int, image_size: int) -> list[int]:
        with torch.no_grad():
            return [f.shape[1] for f in self._level_features(torch.zeros(1, channels, image_size, image_size))]

    def forward(self, x: Tensor) -> DiagonalGaussian:
        """``q(z|x)`` of images ``(B, channels, image_size, image_size)``: one
        :class:`DiagonalGaussian` over ``(B, sum(group_sizes))``, the groups bottom first."""
        features = self._level_features(x)
        if self.top_mlp is not None:
            features[-1] = self.top_mlp(features[-1])
        means, logvars = [], []
        for head, feature in zip(self.heads, features, strict=True):
            mean, logvar = head(feature).chunk(2, dim=1)
            means.append(mean)
            logvars.append(logvar)
        return DiagonalGaussian(torch.cat(means, 1), torch.cat(logvars, 1))
