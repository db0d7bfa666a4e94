"""Small building blocks shared by the networks."""

from __future__ import annotations

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
