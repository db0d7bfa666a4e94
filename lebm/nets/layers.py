"""Small building blocks shared by the networks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

_ACTIVATIONS = {
    "gelu": lambda: nn.GELU(),
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "relu": lambda: nn.ReLU(),
    "silu": lambda: nn.SiLU(),
    "elu": lambda: nn.ELU(),
    "tanh": lambda: nn.Tanh(),
}


def make_activation(name: str) -> nn.Module:
    """The activation called ``name`` (``leaky_relu`` uses slope 0.2, as the papers do)."""
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}") from None


class LatentProjection(nn.ConvTranspose2d):
    """The first transposed convolution of a generator, ``(B, C, 1, 1) -> (B, C', k, k)``, run as
    one matrix product.

    On a 1 x 1 input a stride-1, unpadded transposed convolution places ``z`` times each kernel
    tap at its own output pixel::

        out[b, o, i, j] = bias[o] + sum_c z[b, c] * weight[c, o, i, j]

    which is ``z (B, C) @ weight.reshape(C, C' k k)`` reshaped to ``(B, C', k, k)``. PyTorch's
    convolution kernels run this shape several times below the matrix-product rate: on a CPU core,
    for LEBM's SVHN generator, the product takes 7.5-9 ms where the convolution took 27-32 ms,
    about 4% of a posterior-chain step saved (``docs/performance.md``).
    The parameters, their initialisation and the state-dict keys are those of
    ``nn.ConvTranspose2d``, so checkpoints load either way; inputs larger than 1 x 1, or padded,
    strided, dilated or grouped settings, fall back to the convolution.
    """

    def forward(self, input: Tensor, output_size: list[int] | None = None) -> Tensor:
        one_by_one = input.dim() == 4 and input.shape[-2:] == (1, 1)
        plain = (
            self.padding == (0, 0)
            and self.stride == (1, 1)
            and self.dilation == (1, 1)
            and self.output_padding == (0, 0)
            and self.groups == 1
            and output_size is None
        )
        if not (one_by_one and plain):
            return super().forward(input, output_size)
        batch = input.shape[0]
        flat_weight = self.weight.reshape(self.in_channels, -1)  # (C, C' k k)
        out = input.reshape(batch, self.in_channels) @ flat_weight
        out = out.view(batch, self.out_channels, *self.kernel_size)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        if self.weight.is_contiguous(memory_format=torch.channels_last) and not self.weight.is_contiguous():
            out = out.contiguous(memory_format=torch.channels_last)  # as the convolution would return
        return out


def xavier_init_(module: nn.Module) -> None:
    """Xavier-normal weights on every conv and transposed conv, as the papers' code does; biases
    keep PyTorch's default initialisation (the official code leaves them untouched too)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_normal_(layer.weight)


@contextlib.contextmanager
def batch_statistics(module: nn.Module) -> Iterator[None]:
    """Normalise every BatchNorm layer of ``module`` with the statistics of the batch at hand,
    without touching its running statistics (restored afterwards).

    For evaluation with a net trained, and evaluated by the papers' code, in train mode: inside
    the context each BatchNorm behaves as in training (batch mean and variance) but neither
    ``running_mean``/``running_var`` nor ``num_batches_tracked`` change, so evaluating leaves the
    model's state as it was.
    """
    saved = []
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            saved.append((layer, layer.training, layer.track_running_stats))
            layer.training, layer.track_running_stats = True, False
    try:
        yield
    finally:
        for layer, training, track in saved:
            layer.training, layer.track_running_stats = training, track
