"""ResNet networks of Dual-MCMC (Cui & Han, NeurIPS 2023): an SN-ResNet data-space energy
``E(x)`` and an SNGAN-style ResNet generator ``g(z)``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lebm.config import Configurable
from lebm.nets.layers import xavier_init_


class SNResNetEnergy(nn.Module, Configurable):
    """A spectrally normalised ResNet energy on images ``E(x)``: ``(B, channels, H, W) -> (B,)``.

    It outputs an **energy** (lower = more probable), i.e. ``E = -f`` where ``f`` is the papers'
    negative energy: the official Dual-MCMC net outputs the energy itself and its data-space
    Langevin chain steps along ``-grad_x E``. Layout (``w_i = widths[i]``, "pool" = 2x2 average
    pooling, applied only by the blocks whose ``downsample`` entry is True)::

        start block   conv3x3(C -> w0) - ReLU - conv3x3(w0 -> w0) - pool
                      + shortcut: pool - conv1x1(C -> w0)
        block i       ReLU - conv3x3(w_{i-1} -> w_i) - ReLU - conv3x3(w_i -> w_i) - pool
                      + shortcut: conv1x1(w_{i-1} -> w_i) - pool   (identity when w_{i-1} == w_i and no pool)
        head          ReLU - global average pool over H, W - Linear(w_last -> 1) -> (B,)

    Every Conv2d and Linear is bias-free and (by default) wrapped in spectral normalisation; the
    conv weights are Xavier-normal (initialised before the wrapping), the Linear keeps PyTorch's
    default initialisation. The net has no BatchNorm and no dropout: train and eval mode differ
    only in the spectral norm's power iteration (one step per forward in train mode, updating the
    ``_u``/``_v`` buffers; none in eval mode).

    Presets:
        CIFAR-10 (ndf 512): ``widths=(512, 512, 512, 512)``, ``downsample=(True, True, False, False)``,
        32 -> 16 -> 8 (the defaults).
        CelebA-64 (ndf 1024): ``widths=(64, 128, 256, 512, 1024)``, ``downsample=(True,) * 5``,
        64 -> 32 -> 16 -> 8 -> 4 -> 2.

    Args:
        channels: input image channels ``C``.
        image_size: input height and width; must be divisible by ``2 ** sum(downsample)``.
        widths: output channels of each block, the first being the start block's.
        downsample: one flag per block: whether that block halves the spatial size.
        spectral_norm: wrap every Conv2d and Linear in spectral normalisation.
    """

    def __init__(
        self,
        channels: int = 3,
        image_size: int = 32,
        widths: Sequence[int] = (512, 512, 512, 512),
        downsample: Sequence[bool] = (True, True, False, False),
        spectral_norm: bool = True,
    ) -> None:
        super().__init__()
        widths, downsample = [int(w) for w in widths], [bool(d) for d in downsample]
        if not widths:
            raise ValueError("SNResNetEnergy widths must name at least one block width, got an empty sequence")
        if len(widths) != len(downsample):
            raise ValueError(
                f"SNResNetEnergy widths and downsample need one entry per block, got {len(widths)} widths "
                f"{widths} and {len(downsample)} downsample flags {downsample}: give them the same length"
            )
        if channels < 1 or image_size < 1 or min(widths) < 1:
            raise ValueError(
                f"SNResNetEnergy channels, image_size and widths must be positive, got channels={channels}, "
                f"image_size={image_size}, widths={widths}"
            )
        factor = 2 ** sum(downsample)
        if image_size % factor:
            raise ValueError(
                f"SNResNetEnergy image_size {image_size} is not divisible by 2**{sum(downsample)} = {factor} "
                f"(one halving per True in downsample={downsample}): use fewer down-sampling blocks or "
                "another image_size"
            )
        blocks: list[nn.Module] = [_StartBlock(channels, widths[0], downsample[0])]
        for fan_in, fan_out, down in zip(widths[:-1], widths[1:], downsample[1:], strict=True):
            blocks.append(_PreActBlock(fan_in, fan_out, down))
        self.blocks = nn.Sequential(*blocks)
        self.head_act = nn.ReLU()
        self.linear = nn.Linear(widths[-1], 1, bias=False)
        xavier_init_(self.blocks)  # on the plain weights, before spectral norm wraps them
        if spectral_norm:
            for module in list(self.modules()):
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    nn.utils.parametrizations.spectral_norm(module)
        self.channels = channels
        self.image_size = image_size
        self.in_shape = (channels, image_size, image_size)

    def forward(self, x: Tensor) -> Tensor:
        """The energy ``(B, C, H, W) -> (B,)``."""
        h = self.head_act(self.blocks(x)).mean(dim=(2, 3))
        return self.linear(h).squeeze(1)


class _StartBlock(nn.Module):
    """The first block: no pre-activation, shortcut pool-then-1x1 conv."""

    def __init__(self, fan_in: int, fan_out: int, downsample: bool) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(fan_in, fan_out, 3, 1, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(fan_out, fan_out, 3, 1, 1, bias=False),
            *([nn.AvgPool2d(2)] if downsample else []),
        )
        self.shortcut = nn.Sequential(
            *([nn.AvgPool2d(2)] if downsample else []), nn.Conv2d(fan_in, fan_out, 1, 1, 0, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x) + self.shortcut(x)


class _PreActBlock(nn.Module):
    """A pre-activation residual block; the shortcut learns a 1x1 conv only when it must."""

    def __init__(self, fan_in: int, fan_out: int, downsample: bool) -> None:
        super().__init__()
        pool: list[nn.Module] = [nn.AvgPool2d(2)] if downsample else []
        self.main = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(fan_in, fan_out, 3, 1, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(fan_out, fan_out, 3, 1, 1, bias=False),
            *pool,
        )
        if fan_in != fan_out or downsample:
            self.shortcut: nn.Module = nn.Sequential(nn.Conv2d(fan_in, fan_out, 1, 1, 0, bias=False), *pool)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x) + self.shortcut(x)


class SNGANGenerator(nn.Module, Configurable):
    """An SNGAN-style ResNet generator ``(B, latent_dim) -> (B, channels, S, S)`` in [-1, 1].

    Layout (``w_i = widths[i]``, "up" = bilinear up-sampling x2, ``s0`` = 4, or 7 when S = 28)::

        Linear(latent_dim -> s0 * s0 * w0), reshaped to (w0, s0, s0)
        up-block i    BN(w_i) - ReLU - up - conv3x3(w_i -> w_{i+1}) - BN - ReLU - conv3x3(w_{i+1} -> w_{i+1})
                      + shortcut: up - conv1x1(w_i -> w_{i+1})
        head          BN(w_last) - ReLU - conv3x3(w_last -> channels) - tanh

    so ``len(widths) - 1`` up-blocks take ``s0`` to ``S``. As in the official code the conv weights
    are Xavier-normal and keep their (default-initialised) biases, BatchNorm weights are drawn
    from N(0, 1) and BatchNorm biases are 0; the Linear keeps PyTorch's default initialisation.

    The up-sampling is bilinear with ``align_corners=True``, as in the official ``nets.py``
    (``F.interpolate(..., mode='bilinear', align_corners=True)`` in both the main path and the
    shortcut): the corner pixels of the input and output grids coincide. lebm before this option
    used ``align_corners=False`` (half-pixel centres); ``DualMCMC`` loads the checkpoints of
    that time with ``False``, the generator they were trained with.

    Presets:
        CIFAR-10 (ngf 512): ``widths=(512, 512, 512, 512)``, 4 -> 32 in 3 up-blocks (the defaults).
        CelebA-64 (ngf 1024): ``widths=(1024, 512, 256, 128, 64)``, 4 -> 64 in 4 up-blocks.

    Args:
        latent_dim: nz.
        channels: output image channels.
        image_size: output height and width: 28 (from 7), or ``4 * 2**k`` (from 4).
        widths: the Linear's channels, then each up-block's output channels.
        align_corners: the bilinear up-sampling's ``align_corners`` (True: the official code).
    """

    def __init__(
        self,
        latent_dim: int = 128,
        channels: int = 3,
        image_size: int = 32,
        widths: Sequence[int] = (512, 512, 512, 512),
        align_corners: bool = True,
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if latent_dim < 1 or channels < 1 or not widths or min(widths) < 1:
            raise ValueError(
                f"SNGANGenerator latent_dim, channels and widths must be positive and widths non-empty, got "
                f"latent_dim={latent_dim}, channels={channels}, widths={widths}"
            )
        start = 7 if image_size == 28 else 4
        n_up, size = 0, start
        while size < image_size:
            size, n_up = size * 2, n_up + 1
        if size != image_size:
            raise ValueError(
                f"SNGANGenerator image_size must be 28 or 4 * 2**k (4, 8, 16, 32, 64, ...), got {image_size}"
            )
        if len(widths) != n_up + 1:
            raise ValueError(
                f"SNGANGenerator needs {n_up + 1} widths for image_size {image_size} (the Linear's width, then "
                f"{n_up} up-blocks doubling {start} -> {image_size}), got {len(widths)}: {widths}"
            )
        self.linear = nn.Linear(latent_dim, start * start * widths[0])
        self.blocks = nn.Sequential(
            *(_UpBlock(fan_in, fan_out, align_corners) for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True))
        )
        self.head = nn.Sequential(
            nn.BatchNorm2d(widths[-1]), nn.ReLU(), nn.Conv2d(widths[-1], channels, 3, 1, 1), nn.Tanh()
        )
        xavier_init_(self)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight)
                nn.init.zeros_(module.bias)
        self.latent_dim = latent_dim
        self.channels = channels
        self.image_size = image_size
        self._start_shape = (widths[0], start, start)
        self.align_corners = bool(align_corners)

    def set_align_corners(self, align_corners: bool) -> None:
        """Switch every up-sampling layer's ``align_corners`` (e.g. to run a net trained with the
        other setting: the weights are the same, the interpolation grid is not)."""
        self.align_corners = bool(align_corners)
        for module in self.modules():
            if isinstance(module, nn.Upsample):
                module.align_corners = self.align_corners

    def forward(self, z: Tensor) -> Tensor:
        """``(B, latent_dim)`` or ``(B, latent_dim, 1, 1)`` -> ``(B, channels, S, S)``."""
        h = self.linear(z.flatten(1)).view(z.shape[0], *self._start_shape)
        return self.head(self.blocks(h))


class ChannelsLastUpsample(nn.Upsample):
    """``nn.Upsample`` computed on a channels-last copy of its input: ``(B, C, H, W) ->
    (B, C, s*H, s*W)`` in channels-last memory, the same values as ``nn.Upsample``.

    Why: for an NCHW input PyTorch's CUDA bilinear kernel runs one thread per output pixel and
    loops over batch and channels inside it, so a small map with many channels (a generator's
    first up-block: 8 x 8 outputs, 512 channels) leaves the GPU almost idle; its channels-last
    kernel runs one thread per output element. The convolution that follows then runs
    channels-last too. The copy costs one pass over the input (a quarter of the output at x2)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.contiguous(memory_format=torch.channels_last))


class _UpBlock(nn.Module):
    """A residual block that doubles the spatial size (bilinear) and maps ``fan_in -> fan_out``."""

    def __init__(self, fan_in: int, fan_out: int, align_corners: bool = True) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.BatchNorm2d(fan_in),
            nn.ReLU(),
            ChannelsLastUpsample(scale_factor=2, mode="bilinear", align_corners=align_corners),
            nn.Conv2d(fan_in, fan_out, 3, 1, 1),
            nn.BatchNorm2d(fan_out),
            nn.ReLU(),
            nn.Conv2d(fan_out, fan_out, 3, 1, 1),
        )
        self.shortcut = nn.Sequential(
            ChannelsLastUpsample(scale_factor=2, mode="bilinear", align_corners=align_corners),
            nn.Conv2d(fan_in, fan_out, 1, 1, 0),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x) + self.shortcut(x)
