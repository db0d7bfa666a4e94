"""Small building blocks shared by the networks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

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
