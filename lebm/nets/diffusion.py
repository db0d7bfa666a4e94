"""DAMC's amortizer: a conditional latent diffusion model that starts MCMC chains.

Yu et al., *Learning Energy-Based Prior Model with Diffusion-Amortized MCMC*, NeurIPS 2023,
arXiv 2310.03218; the official repository's ``workspace/src/diffusion_net.py`` (``_netQ_U``,
``Diffusion_UnetA``, ``ConcatSquashLinearSkipCtx``, the ``Encoder_*`` nets). The parts, one job each:

- :class:`DiffusionMLP`: the noise predictor ``eps_hat(z_t, lambda, e)``, an MLP "U-Net" of
  context-gated layers (:class:`ConcatSquashLinear`);
- :class:`ConvEmbedding`, :class:`MLPEmbedding`: the condition encoders ``e_x = Enc(x)``;
- :class:`NullEmbedding`: the random "null" condition ``e_0 = P(xi)``, ``xi ~ N(0, I)`` fresh at
  every call, that stands for "no observation" (unconditional mode);
- :class:`LatentDiffusionAmortizer`: the three together with a log-SNR schedule, as a
  :class:`~lebm.samplers.initializers.ChainInitializer` (ancestral samples as chain starts, the
  ancestral sampler captured as one CUDA graph on a GPU) with the ε-prediction loss that distils
  chain outputs into it.

The schedule, kernels and sampler are the pure functions of :mod:`lebm.samplers.diffusion`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lebm import arguments
from lebm.config import Configurable
from lebm.samplers.diffusion import (
    DIFFUSION_VARIANCES,
    LOGSNR_BOUND,
    LogSNRSchedule,
    ancestral_sample_on_grid,
    forward_diffuse,
    logsnr_grid,
)
from lebm.samplers.initializers import ChainInitializer

__all__ = [
    "ConcatSquashLinear",
    "ConvEmbedding",
    "DiffusionMLP",
    "GridContext",
    "LatentDiffusionAmortizer",
    "MLPEmbedding",
    "NullEmbedding",
    "sinusoidal_embedding",
]

#: The slope of the denoiser's and the null embedding's LeakyReLUs (PyTorch's default, as in the official code).
_DENOISER_SLOPE = 0.01
#: The slope of the encoders' LeakyReLUs.
_ENCODER_SLOPE = 0.2

#: The denoiser trunk's matrices: the Fourier features' ``B`` and per layer ``(W; W_s, b; b_s, W_g, b_g, W_b)``.
TrunkWeights = tuple[Tensor, list[tuple[Tensor, ...]]]


def sinusoidal_embedding(x: Tensor, dim: int) -> Tensor:
    """The transformer's sinusoidal embedding of scalars ``x`` ``(B,) -> (B, dim)``, ``dim`` even::

        f_k = exp(-k log(10000) / (dim/2 - 1)),  k = 0 .. dim/2 - 1;   out = [sin(x f), cos(x f)]

    (the official ``SinusoidalPosEmb``; :class:`DiffusionMLP` embeds ``1000 t'`` with it).
    """
    half = dim // 2
    frequencies = torch.exp(torch.arange(half, device=x.device, dtype=x.dtype) * (-math.log(10000.0) / (half - 1)))
    angles = x[:, None] * frequencies[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ConcatSquashLinear(nn.Module):
    """A linear layer gated and shifted by a context (the official ``ConcatSquashLinearSkipCtx``)::

        h   = SiLU(W_c SiLU(c) + b_c)                                  (B, dim_out)
        out = (W x + b) * sigmoid(W_g h + b_g) + W_b h + (W_s x + b_s)  (B, dim_out)

    ``W_b`` has no bias; the last term is a linear skip. The layer takes ``SiLU(c)``, computed once
    for all the layers of a net; ``W x + b`` and the skip are one matrix product (``linear``, the
    two maps stacked; each initialised as its own ``nn.Linear`` would be).

    Args:
        dim_in: the input's width.
        dim_out: the output's width.
        dim_context: the context's width.
    """

    def __init__(self, dim_in: int, dim_out: int, dim_context: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim_in, 2 * dim_out)  # [W; W_s], [b; b_s]: PyTorch's init depends on fan_in only
        self.context = nn.Linear(dim_context, dim_out)
        self.gate = nn.Linear(dim_out, dim_out)
        self.shift = nn.Linear(dim_out, dim_out, bias=False)

    def forward(self, x: Tensor, activated_context: Tensor) -> Tensor:
        """``x`` ``(B, dim_in)`` and ``SiLU(c)`` ``(B, dim_context)`` -> ``(B, dim_out)``."""
        return self.gated(x, self.context(activated_context))

    def gating_weights(self, dtype: torch.dtype | None = None) -> tuple[Tensor, ...]:
        """``(W; W_s, b; b_s, W_g, b_g, W_b)``, what :meth:`gated` multiplies by, cast to ``dtype``
        (None: the parameters themselves). A loop of many calls casts them once for all (under
        autocast each call would cast them again: a graph records no cast cache)."""
        tensors = (self.linear.weight, self.linear.bias, self.gate.weight, self.gate.bias, self.shift.weight)
        return tensors if dtype is None else tuple(t.to(dtype) for t in tensors)

    def gated(self, x: Tensor, projected_context: Tensor, weights: Sequence[Tensor] | None = None) -> Tensor:
        """The layer given its context's projection ``W_c SiLU(c) + b_c`` ``(B, dim_out)``: ``x``
        ``(B, dim_in)`` -> ``(B, dim_out)``, through its submodules, or multiplied by ``weights``
        (:meth:`gating_weights`, cast once for a sampling loop; submodules' hooks are not called)."""
        h = F.silu(projected_context)
        if weights is None:
            value, skip = self.linear(x).chunk(2, dim=1)
            return value * torch.sigmoid(self.gate(h)) + self.shift(h) + skip
        linear, bias, gate, gate_bias, shift = weights
        value, skip = F.linear(x, linear, bias).chunk(2, dim=1)
        return value * torch.sigmoid(F.linear(h, gate, gate_bias)) + F.linear(h, shift) + skip

    def split_context(self, activated_time: Tensor, activated_condition: Tensor) -> tuple[Tensor, Tensor]:
        """``W_c SiLU(c) + b_c`` of ``c = [time embedding, condition]`` split into its two terms:
        ``W_c[:, :T] SiLU(time)`` of ``activated_time`` ``(S, T)`` -> ``(S, dim_out)`` (one row per
        time) and ``W_c[:, T:] SiLU(e) + b_c`` of ``activated_condition`` ``(B, E)`` -> ``(B, dim_out)``
        (one row per example): the projection of time ``s`` and example ``b`` is their sum."""
        width = activated_time.shape[1]
        weight = self.context.weight
        per_time = F.linear(activated_time, weight[:, :width])
        return per_time, F.linear(activated_condition, weight[:, width:], self.context.bias)


class GridContext:
    """What the denoiser reads besides ``z_t`` on a fixed grid of times (:meth:`DiffusionMLP.on_grid`),
    computed once for a whole ancestral sampling: per layer, the grid's time terms (``S`` rows of
    ``(dim_out,)``, ``per_time``) and the examples' condition terms (``(B, dim_out)``, ``per_example``),
    which :meth:`at` adds for step ``i``; and the trunk's matrices (:meth:`DiffusionMLP.trunk_weights`),
    cast once to the compute dtype."""

    def __init__(self, per_time: list[Tensor], per_example: list[Tensor], weights: TrunkWeights) -> None:
        self.per_time = [rows.unbind() for rows in per_time]
        self.per_example = per_example
        self.weights = weights

    def at(self, i: int) -> list[Tensor]:
        """Every layer's ``W_c SiLU(c) + b_c`` ``(B, dim_out)`` at the grid's time ``i``."""
        return [times[i] + examples for times, examples in zip(self.per_time, self.per_example, strict=True)]


class DiffusionMLP(nn.Module, Configurable):
    """The noise predictor ``eps_hat(z_t, lambda, e)`` of DAMC's amortizer (the official
    ``Diffusion_UnetA``): ``(B, D), (B,), (B, context_dim) -> (B, D)``.

    - **Input:** random Fourier features ``[sin(2 pi z B), cos(2 pi z B), z]`` with a learnable
      ``B`` ``(D, ceil(D/2))`` initialised ``N(0, 1)`` (the official ``D/2`` columns; rounded up
      for an odd ``D``), width ``D + 2 ceil(D/2)``.
    - **Time:** ``lambda`` clamped to ``[-20, 20]``, mapped to ``t' = arctan(exp(-lambda/2)) / (pi/2)``
      in ``[0, 1]``, embedded as ``sinusoidal_embedding(1000 t', time_dim)`` then
      ``Linear - SiLU - Linear``.
    - **Context** of every layer: ``c = [time embedding, e]``, width ``time_dim + context_dim``.
    - **Topology** (``w = 32 nf``; each arrow a :class:`ConcatSquashLinear`, LeakyReLU(0.01) between)::

          in:   fourier -> w -> 2w -> 2w          each output kept as a skip (before its activation)
          mid:  2w -> 2w
          out:  [h, skip 2w] -> 2w,  [h, skip 2w] -> w,  [h, skip w] -> D     (activation after each concat)

    - **Output:** ``z_t + MLP(...)`` (``residual=True``, the official ``diffusion_residual``) or
      ``MLP(...)``.

    Args:
        latent_dim: D.
        context_dim: the condition embedding's width (``nxemb``).
        nf: width multiplier: ``nf = 4`` gives widths 128/256 (official), ``nf = 1`` 32/64.
        time_dim: the time embedding's width (``ntemb``), even, at least 4.
        residual: add ``z_t`` to the output.
    """

    def __init__(
        self, latent_dim: int, context_dim: int, nf: int = 4, time_dim: int = 128, residual: bool = True
    ) -> None:
        super().__init__()
        owner = "DiffusionMLP"
        latent_dim = arguments.whole(owner, "latent_dim", latent_dim, at_least=1)
        context_dim = arguments.whole(owner, "context_dim", context_dim, at_least=1)
        nf = arguments.whole(owner, "nf", nf, at_least=1)
        time_dim = arguments.whole(owner, "time_dim", time_dim, at_least=4)
        if time_dim % 2:
            raise ValueError(f"{owner} time_dim must be even (half sines, half cosines), got {time_dim}")
        self.residual = arguments.flag(owner, "residual", residual)
        self.latent_dim, self.context_dim, self.time_dim, self.nf = latent_dim, context_dim, time_dim, nf
        self.fourier = nn.Parameter(torch.randn(latent_dim, (latent_dim + 1) // 2))
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        width, dim_in, dim_c = 32 * nf, latent_dim + 2 * ((latent_dim + 1) // 2), time_dim + context_dim
        self.down = nn.ModuleList(
            [
                ConcatSquashLinear(dim_in, width, dim_c),
                ConcatSquashLinear(width, 2 * width, dim_c),
                ConcatSquashLinear(2 * width, 2 * width, dim_c),
            ]
        )
        self.middle = ConcatSquashLinear(2 * width, 2 * width, dim_c)
        self.up = nn.ModuleList(
            [
                ConcatSquashLinear(4 * width, 2 * width, dim_c),
                ConcatSquashLinear(4 * width, width, dim_c),
                ConcatSquashLinear(2 * width, latent_dim, dim_c),
            ]
        )

    def time_embedding(self, logsnr: Tensor) -> Tensor:
        """``(B,) -> (B, time_dim)``: ``lambda`` clamped to ``[-20, 20]``, ``t' = arctan(exp(-lambda/2)) / (pi/2)``,
        ``Linear - SiLU - Linear`` of ``sinusoidal_embedding(1000 t')``."""
        clamped = logsnr.clamp(-LOGSNR_BOUND, LOGSNR_BOUND)
        t = torch.arctan(torch.exp(-0.5 * clamped)) / (0.5 * math.pi)
        return self.time_mlp(sinusoidal_embedding(1000.0 * t, self.time_dim))

    @property
    def layers(self) -> list[ConcatSquashLinear]:
        """The context-gated layers in the order the trunk runs them: down, middle, up."""
        return [*self.down, self.middle, *self.up]

    def forward(self, z_t: Tensor, logsnr: Tensor, context: Tensor) -> Tensor:
        """The predicted noise ``eps_hat`` ``(B, D)`` of ``z_t`` ``(B, D)`` at log-SNRs ``logsnr``
        ``(B,)`` given conditions ``context`` ``(B, context_dim)``."""
        c = F.silu(torch.cat([self.time_embedding(logsnr), context], dim=1))  # every layer reads SiLU(c)
        return self.trunk(z_t, [layer.context(c) for layer in self.layers])

    def trunk_weights(self, dtype: torch.dtype | None = None) -> TrunkWeights:
        """The Fourier features' ``B`` and every layer's :meth:`ConcatSquashLinear.gating_weights`,
        cast to ``dtype`` (None: the parameters themselves)."""
        fourier = self.fourier if dtype is None else self.fourier.to(dtype)
        return fourier, [layer.gating_weights(dtype) for layer in self.layers]

    def on_grid(self, logsnrs: Tensor, context: Tensor) -> GridContext:
        """What the predicted noise reads of the time and the condition, for every time of a grid
        ``logsnrs`` ``(S,)`` and every example's condition ``context`` ``(B, context_dim)``: the time
        embeddings computed once for the grid, each layer's context projection split into its time
        and its condition terms (:meth:`ConcatSquashLinear.split_context`), and the trunk's weights
        cast once to the autocast dtype (when autocast is on). ``trunk(z_t, grid.at(i), grid.weights)``
        is then ``forward(z_t, logsnrs[i].expand(B), context)`` without the per-step context work.
        Sampling reads the layers' ``weight`` and ``bias`` tensors directly: hooks on the layers
        are not called."""
        times = F.silu(self.time_embedding(logsnrs))
        condition = F.silu(context)
        split = [layer.split_context(times, condition) for layer in self.layers]
        device = logsnrs.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        weights = self.trunk_weights(dtype)
        return GridContext([per_time for per_time, _ in split], [per_example for _, per_example in split], weights)

    def trunk(self, z_t: Tensor, projected_contexts: Sequence[Tensor], weights: TrunkWeights | None = None) -> Tensor:
        """The predicted noise ``(B, D)`` of ``z_t`` ``(B, D)`` given every layer's context projection
        ``(B, dim_out)``, in :attr:`layers`' order: through the submodules, or with the
        :meth:`trunk_weights` ``weights`` (cast once for a sampling loop)."""
        fourier, layer_weights = weights if weights is not None else (self.fourier, [None] * len(self.layers))
        projections, multipliers = iter(projected_contexts), iter(layer_weights)
        projected = 2 * math.pi * (z_t @ fourier)
        h = torch.cat([projected.sin(), projected.cos(), z_t], dim=1)
        skips = []
        for layer in self.down:
            h = layer.gated(h, next(projections), next(multipliers))
            skips.append(h)
            h = F.leaky_relu(h, _DENOISER_SLOPE)
        h = self.middle.gated(h, next(projections), next(multipliers))
        for layer in self.up:
            h = F.leaky_relu(torch.cat([h, skips.pop()], dim=1), _DENOISER_SLOPE)
            h = layer.gated(h, next(projections), next(multipliers))
        return z_t + h if self.residual else h


class ConvEmbedding(nn.Module, Configurable):
    """The amortizer's image encoder ``Enc(x)``: ``(B, C, S, S) -> (B, embed_dim)`` (the official
    ``Encoder_cifar10``, ``Encoder_celeba64`` and ``Encoder_mnist``)::

        Conv3x3 s1 p1 (C -> nif)                                       [S]
        Conv4x4 s2 p1, doubling the width up to 8 nif                  [S/2], [S/4], ... while the map is wider than 4
        Conv kxk s1 p0 (-> embed_dim), k = the map's remaining size    [1]

    InstanceNorm2d(affine) and LeakyReLU(0.2) after every conv but the last; biases on; PyTorch's
    default initialisation. SVHN/CIFAR-10 (32 px, nif 64): 3->64 [32], 128 [16], 256 [8], 512 [4],
    4x4 -> 1024; CelebA-64: 64 [64], 128 [32], 256 [16], 512 [8], 512 [4], 4x4 -> 1024; MNIST (28 px,
    nif 128): 128 [28], 256 [14], 512 [7], 1024 [3], 3x3 -> 1024.

    Args:
        channels: C.
        image_size: S, at least 2.
        nif: the first conv's width.
        embed_dim: the embedding's width (``nxemb``; official 1024).
    """

    def __init__(self, channels: int = 3, image_size: int = 32, nif: int = 64, embed_dim: int = 1024) -> None:
        super().__init__()
        owner = "ConvEmbedding"
        channels = arguments.whole(owner, "channels", channels, at_least=1)
        size = arguments.whole(owner, "image_size", image_size, at_least=2)
        nif = arguments.whole(owner, "nif", nif, at_least=1)
        self.embed_dim = arguments.whole(owner, "embed_dim", embed_dim, at_least=1)
        layers: list[nn.Module] = [nn.Conv2d(channels, nif, 3, 1, 1)]
        width = nif
        while size > 4:
            layers += [nn.InstanceNorm2d(width, affine=True), nn.LeakyReLU(_ENCODER_SLOPE)]
            layers.append(nn.Conv2d(width, min(2 * width, 8 * nif), 4, 2, 1))
            width, size = min(2 * width, 8 * nif), size // 2
        layers += [nn.InstanceNorm2d(width, affine=True), nn.LeakyReLU(_ENCODER_SLOPE)]
        layers.append(nn.Conv2d(width, self.embed_dim, size, 1, 0))
        self.net = nn.Sequential(*layers)
        self.channels, self.image_size, self.nif = channels, int(image_size), nif

    def forward(self, x: Tensor) -> Tensor:
        """The embedding ``(B, embed_dim)`` of images ``x`` ``(B, C, S, S)``; images of another
        shape are refused in one line (the convolutions would fail deep inside, or embed wrongly)."""
        expected = (self.channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"ConvEmbedding(channels={self.channels}, image_size={self.image_size}) embeds images (B, "
                f"{', '.join(map(str, expected))}), got {tuple(x.shape)}: give images of that shape, or build the "
                "amortizer's encoder with the data's channels and image_size"
            )
        return self.net(x).flatten(1)


class MLPEmbedding(nn.Module, Configurable):
    """An MLP condition encoder for vectors or small images (the official toy's encoder):
    ``flatten - (Linear - LeakyReLU(0.2)) x depth - Linear``, ``(B, *in_shape) -> (B, embed_dim)``.

    Args:
        in_shape: one observation's shape, e.g. ``[2]`` or ``[1, 8, 8]`` (an int is ``[int]``).
        hidden: the hidden width.
        embed_dim: the embedding's width.
        depth: the number of hidden layers (0: one Linear).
    """

    def __init__(self, in_shape: int | Sequence[int], hidden: int = 128, embed_dim: int = 64, depth: int = 1) -> None:
        super().__init__()
        owner = "MLPEmbedding"
        shape = [in_shape] if isinstance(in_shape, int) else list(in_shape)
        shape = [arguments.whole(owner, "in_shape", d, at_least=1) for d in shape]
        hidden = arguments.whole(owner, "hidden", hidden, at_least=1)
        self.embed_dim = arguments.whole(owner, "embed_dim", embed_dim, at_least=1)
        depth = arguments.whole(owner, "depth", depth)
        widths = [math.prod(shape)] + [hidden] * depth
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(fan_in, fan_out), nn.LeakyReLU(_ENCODER_SLOPE)]
        layers.append(nn.Linear(widths[-1], self.embed_dim))
        self.net = nn.Sequential(*layers)
        self.in_shape = shape

    def forward(self, x: Tensor) -> Tensor:
        """The embedding ``(B, embed_dim)`` of observations ``x`` ``(B, *in_shape)``."""
        return self.net(x.flatten(1))


class NullEmbedding(nn.Module, Configurable):
    """The random "null" condition of the unconditional mode (the official ``prior_emb``)::

        e_0 = P(xi),   xi ~ N(0, I_latent_dim) drawn fresh at every call,   P = Linear - LeakyReLU(0.01) - Linear

    Args:
        latent_dim: the width of ``xi`` (the official code uses nz).
        embed_dim: the embedding's width, that of the encoder it stands in for.
        hidden: P's hidden width.
    """

    def __init__(self, latent_dim: int, embed_dim: int, hidden: int = 128) -> None:
        super().__init__()
        owner = "NullEmbedding"
        self.latent_dim = arguments.whole(owner, "latent_dim", latent_dim, at_least=1)
        self.embed_dim = arguments.whole(owner, "embed_dim", embed_dim, at_least=1)
        hidden = arguments.whole(owner, "hidden", hidden, at_least=1)
        self.net = nn.Sequential(
            nn.Linear(self.latent_dim, hidden), nn.LeakyReLU(_DENOISER_SLOPE), nn.Linear(hidden, self.embed_dim)
        )

    def forward(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        """``n`` null embeddings ``(n, embed_dim)``, their ``xi`` ``(n, latent_dim)`` drawn from
        ``generator`` on ``device`` (default: the parameters')."""
        weight = self.net[0].weight
        xi = torch.randn(n, self.latent_dim, generator=generator, device=device or weight.device, dtype=weight.dtype)
        return self.net(xi)


class LatentDiffusionAmortizer(ChainInitializer, nn.Module, Configurable):
    """DAMC's amortizer ``Q`` (the official ``_netQ_U``): a conditional latent diffusion model whose
    ancestral samples start MCMC chains, trained to match those chains' outputs.

    One denoiser serves two modes: **posterior** (condition ``e_x = Enc(x)``) and
    **unconditional** (condition ``e_0 = P(xi)``, a :class:`NullEmbedding`, fresh ``xi`` at every
    call). Classifier-free guidance is off (the official ``cond_w = 0``).

    - **Sampling** (:meth:`sample`, :meth:`start`): ``z_T ~ N(0, I)``, then ``sampling_steps``
      ancestral steps (:func:`lebm.samplers.diffusion.ancestral_sample_on_grid`), without autograd.
    - **Training** (:meth:`loss`): the unweighted continuous-time ε-prediction loss at teacher
      samples ``z`` (chain outputs), each example conditioned on ``Enc(x_i)`` or on a null embedding.

    As a :class:`~lebm.samplers.initializers.ChainInitializer`, chains call
    ``Q.start(n, context=x, generator=stream)`` (``context=None``: unconditional), which keeps the
    initializer contract (shape, detached, float32). ``Q(...)`` (``forward``) is :meth:`sample`.

    Args:
        latent_dim: D.
        encoder: ``Enc``, an ``nn.Module`` mapping observations ``(B, ...)`` to ``(B, embed_dim)``
            (:class:`ConvEmbedding`, :class:`MLPEmbedding`).
        embed_dim: the condition's width (``nxemb``).
        nf: the denoiser's width multiplier (:class:`DiffusionMLP`).
        time_dim: the time embedding's width (``ntemb``).
        null_hidden: the null embedding MLP's hidden width.
        logsnr_min: the schedule's noisiest end ``lambda(1)`` (:class:`~lebm.samplers.diffusion.LogSNRSchedule`).
        logsnr_max: its cleanest end ``lambda(0)``, above ``logsnr_min``; both in ``[-20, 20]``.
        sampling_steps: ancestral steps per sample (``n_interval``), at least 2.
        variance: the reverse kernel's variance, ``"large"`` (official) or ``"small"``.
        sampling_noise: add the reverse kernel's noise (official ``Q_with_noise = True``).
        residual: the denoiser returns ``z_t + MLP`` (official ``diffusion_residual = True``).
        cuda_graph: on a CUDA device, record a start's ancestral sampler (:meth:`from_state`: the
            condition and the ``sampling_steps`` reverse steps) once per shape as one CUDA graph and
            replay it at every later start, as chains are (``ChainInitializer``); False: eager.
    """

    #: The ancestral sampler (:meth:`from_state`) may be recorded whole as one CUDA graph.
    capturable = True
    #: A subclass with another sampler or condition opts in itself, as one with another ``from_state``.
    recorded_methods = (*ChainInitializer.recorded_methods, "reverse_diffusion", "condition")

    def __init__(
        self,
        latent_dim: int,
        encoder: nn.Module,
        embed_dim: int,
        nf: int = 4,
        time_dim: int = 128,
        null_hidden: int = 128,
        logsnr_min: float = -5.1,
        logsnr_max: float = 9.8,
        sampling_steps: int = 100,
        variance: str = "large",
        sampling_noise: bool = True,
        residual: bool = True,
        cuda_graph: bool = True,
    ) -> None:
        nn.Module.__init__(self)
        owner = "LatentDiffusionAmortizer"
        if not isinstance(encoder, nn.Module):
            raise TypeError(
                f"{owner} encoder must be an nn.Module mapping x (B, ...) to (B, embed_dim), "
                f"got {type(encoder).__name__}"
            )
        latent_dim = arguments.whole(owner, "latent_dim", latent_dim, at_least=1)
        embed_dim = arguments.whole(owner, "embed_dim", embed_dim, at_least=1)
        nf = arguments.whole(owner, "nf", nf, at_least=1)
        time_dim = arguments.whole(owner, "time_dim", time_dim, at_least=4)
        if time_dim % 2:
            raise ValueError(f"{owner} time_dim must be even (half sines, half cosines), got {time_dim}")
        null_hidden = arguments.whole(owner, "null_hidden", null_hidden, at_least=1)
        bound = {"at_least": -LOGSNR_BOUND, "at_most": LOGSNR_BOUND, "why_at_most": "the denoiser's input range"}
        low = arguments.number(owner, "logsnr_min", logsnr_min, **bound)
        high = arguments.number(owner, "logsnr_max", logsnr_max, **bound)
        if not high > low:
            raise ValueError(f"{owner} logsnr_max must be > logsnr_min={low:g}, got {high:g}")
        self.sampling_steps = arguments.whole(owner, "sampling_steps", sampling_steps, at_least=2)
        self.variance = arguments.one_of(owner, "variance", variance, DIFFUSION_VARIANCES)
        self.sampling_noise = arguments.flag(owner, "sampling_noise", sampling_noise)
        residual = arguments.flag(owner, "residual", residual)
        self.cuda_graph = arguments.flag(owner, "cuda_graph", cuda_graph)
        self.latent_dim, self.embed_dim = latent_dim, embed_dim
        self.schedule = LogSNRSchedule(low, high)
        self.encoder = encoder
        self.null = NullEmbedding(latent_dim, embed_dim, null_hidden)
        self.denoiser = DiffusionMLP(latent_dim, embed_dim, nf=nf, time_dim=time_dim, residual=residual)

    @property
    def device(self) -> torch.device:
        """The device of the amortizer's parameters."""
        return self.null.net[0].weight.device

    def condition(self, x: Tensor | None, n: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """The condition ``(n, embed_dim)``: ``Enc(x)`` of observations ``x`` ``(n, ...)``, or ``n``
        null embeddings (``x = None``; their ``xi`` from ``generator``)."""
        if x is None:
            if n is None:
                raise ValueError("LatentDiffusionAmortizer.condition needs x or n (the number of null embeddings)")
            return self.null(n, generator)
        if n is not None and n != x.shape[0]:
            raise ValueError(f"LatentDiffusionAmortizer.condition: n={n} but x has {x.shape[0]} rows")
        e = self.encoder(x)
        if not isinstance(e, Tensor) or e.shape != (x.shape[0], self.embed_dim):
            got = tuple(e.shape) if isinstance(e, Tensor) else type(e).__name__
            raise ValueError(
                f"LatentDiffusionAmortizer encoder must map x {tuple(x.shape)} to (B, embed_dim) = "
                f"({x.shape[0]}, {self.embed_dim}), got {got}"
            )
        return e

    def condition_mixed(self, x: Tensor, conditional: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Per example, ``Enc(x_i)`` where ``conditional[i]`` else a null embedding: ``x`` ``(B, ...)``,
        ``conditional`` a bool tensor ``(B,)`` -> ``(B, embed_dim)``. The null embeddings of all
        ``B`` rows are drawn (their ``xi`` from ``generator``), so the stream does not depend on the mask."""
        if not isinstance(conditional, Tensor) or conditional.dtype != torch.bool or conditional.shape != x.shape[:1]:
            got = f"{conditional.dtype} {tuple(conditional.shape)}" if isinstance(conditional, Tensor) else conditional
            raise ValueError(
                f"LatentDiffusionAmortizer: conditional must be a bool tensor ({x.shape[0]},), one per row of x, "
                f"got {got}"
            )
        encoded = self.condition(x)
        null = self.null(x.shape[0], generator, device=encoded.device).to(encoded.dtype)
        return torch.where(conditional[:, None].to(encoded.device), encoded, null)

    def denoise(self, z_t: Tensor, logsnr: Tensor, context: Tensor) -> Tensor:
        """The predicted noise ``eps_hat`` ``(B, D)`` of ``z_t`` ``(B, D)`` at log-SNRs ``(B,)`` given
        conditions ``context`` ``(B, embed_dim)``."""
        return self.denoiser(z_t, logsnr, context)

    @torch.no_grad()
    def sample(
        self,
        n: int | None = None,
        x: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        steps: int | None = None,
    ) -> Tensor:
        """``n`` samples ``(n, D)`` by ancestral sampling, without autograd: of ``q(z | x)`` given
        observations ``x`` ``(n, ...)`` (``n`` defaults to their rows), or of the unconditional mode
        (``x = None``). Draws, all from ``generator``: ``z_T ~ N(0, I)``, the null embeddings' ``xi``
        (unconditional), then each step's noise. ``steps`` overrides ``sampling_steps``. Always
        eager: chains start from :meth:`start`, the same draws, recorded as a CUDA graph on a GPU."""
        if x is None and n is None:
            raise ValueError("LatentDiffusionAmortizer.sample needs n (unconditional) or x (posterior mode)")
        owner = type(self).__name__
        rows = int(x.shape[0]) if x is not None else arguments.whole(owner, "sample(n)", n, at_least=1)
        if x is not None and n is not None and n != rows:
            raise ValueError(f"LatentDiffusionAmortizer.sample: n={n} but x has {rows} rows")
        n_steps = self.sampling_steps if steps is None else arguments.whole(owner, "steps", steps, at_least=2)
        z_T = self.initial_state(rows, x, generator, x.device if x is not None else None)
        return self.reverse_diffusion(z_T, x, generator, n_steps)

    def forward(
        self,
        n: int | None = None,
        x: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        steps: int | None = None,
    ) -> Tensor:
        """``Q(n, x)`` is :meth:`sample` (chains call :meth:`start`, the same draw under the initializer contract)."""
        return self.sample(n, x, generator=generator, steps=steps)

    def initial_state(
        self, n: int, context: Tensor | None, generator: torch.Generator | None, device: torch.device | None
    ) -> Tensor:
        """``z_T ~ N(0, I)`` ``(n, D)`` from ``generator``, on the amortizer's device, in its
        parameters' precision (float32 when the nets run under autocast)."""
        if device is not None and torch.device(device).type != self.device.type:
            raise ValueError(f"LatentDiffusionAmortizer samples on its parameters' device {self.device}, not {device}")
        weight = self.null.net[0].weight
        return torch.randn(n, self.latent_dim, generator=generator, device=weight.device, dtype=weight.dtype)

    def from_state(self, state: Tensor, context: Tensor | None, generator: torch.Generator | None) -> Tensor:
        """The chains' start ``(n, D)`` from ``z_T`` ``state`` ``(n, D)``: :meth:`reverse_diffusion` in
        ``sampling_steps`` steps, conditioned on the observations ``context`` ``(n, ...)`` or
        unconditional (None)."""
        return self.reverse_diffusion(state, context, generator, self.sampling_steps)

    def reverse_diffusion(
        self, z_T: Tensor, x: Tensor | None, generator: torch.Generator | None, n_steps: int
    ) -> Tensor:
        """Ancestral sampling (:func:`lebm.samplers.diffusion.ancestral_sample_on_grid`) from ``z_T`` ``(n, D)``
        in ``n_steps`` steps, conditioned on ``Enc(x)`` of ``x`` ``(n, ...)``, or on ``n`` null
        embeddings (``x = None``, their ``xi`` drawn from ``generator`` first). The time embeddings
        and the condition's share of every layer's context are computed once, before the loop
        (:meth:`DiffusionMLP.on_grid`): a step runs the denoiser's trunk alone."""
        context = self.condition(x, z_T.shape[0], generator)
        logsnrs = logsnr_grid(self.schedule, n_steps, z_T)
        grid = self.denoiser.on_grid(logsnrs, context)
        return ancestral_sample_on_grid(
            lambda z, i: self.denoiser.trunk(z, grid.at(i), grid.weights),
            z_T,
            logsnrs,
            variance=self.variance,
            noise=self.sampling_noise,
            generator=generator,
        )

    def loss(
        self,
        x: Tensor | None,
        z: Tensor,
        conditional: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The ε-prediction loss at teacher samples ``z`` ``(B, D)``, a scalar: the batch mean of
        ``lebm.estimators.denoising_loss`` (``1/2 ||eps - eps_hat(alpha_u z + sigma_u eps, lambda(u), c_i)||^2``,
        ``u ~ U(0, 1)``) with per-example conditions ``c_i``:

        - ``Enc(x_i)`` for all rows (``conditional=None``);
        - ``Enc(x_i)`` where ``conditional[i]``, else a null embedding (``conditional`` a bool ``(B,)``:
          DAMC's ``p_mask`` draw);
        - a null embedding for all rows (``x=None``: the unconditional branch alone).

        Draws, all from ``generator``: the null embeddings' ``xi`` (when any is used), ``u``, ``eps``.
        ``z`` is read as given (detach chain outputs); gradients reach the encoder, the null MLP
        and the denoiser.
        """
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"LatentDiffusionAmortizer.loss: z must be (B, {self.latent_dim}), got {tuple(z.shape)}")
        if x is None:
            if conditional is not None:
                raise ValueError("LatentDiffusionAmortizer.loss: conditional needs the observations x")
            context = self.null(z.shape[0], generator, device=z.device)
        else:
            if x.shape[0] != z.shape[0]:
                raise ValueError(f"LatentDiffusionAmortizer.loss: x has {x.shape[0]} rows, z {z.shape[0]}")
            context = self.condition(x) if conditional is None else self.condition_mixed(x, conditional, generator)
        z_t, logsnr, eps = forward_diffuse(z, self.schedule, generator=generator)
        return 0.5 * (eps - self.denoiser(z_t, logsnr, context)).square().sum(1).mean()

    __repr__ = nn.Module.__repr__

    def extra_repr(self) -> str:
        """The sampling settings, shown with the submodules."""
        return (
            f"latent_dim={self.latent_dim}, embed_dim={self.embed_dim}, schedule={self.schedule!r}, "
            f"sampling_steps={self.sampling_steps}, variance={self.variance!r}, sampling_noise={self.sampling_noise}"
        )
