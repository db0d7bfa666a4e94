"""Energy networks on latent vectors."""

from __future__ import annotations

from torch import Tensor, nn

from lebm.config import Configurable
from lebm.nets.layers import make_activation


class EnergyMLP(nn.Module, Configurable):
    """An MLP energy ``E(z)``: ``(B, in_dim) -> (B,)``.

    It outputs an **energy** (lower = more probable), i.e. ``E = -f`` where ``f`` is the papers'
    negative energy. LEBM's SVHN net is ``EnergyMLP(100, hidden=200, depth=2, activation="gelu")``:
    ``Linear(100, 200) - GELU - Linear(200, 200) - GELU - Linear(200, 1)``.

    Args:
        in_dim: latent dimension.
        hidden: width of the hidden layers.
        depth: number of hidden layers.
        activation: ``gelu``, ``leaky_relu`` (slope 0.2), ``relu``, ``silu``, ``elu``, ``tanh``.
        spectral_norm: wrap every Linear in spectral normalisation.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int = 200,
        depth: int = 2,
        activation: str = "gelu",
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"EnergyMLP depth must be >= 1, got {depth}")
        widths = [in_dim] + [hidden] * depth
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=False):
            layers += [_linear(fan_in, fan_out, spectral_norm), make_activation(activation)]
        layers.append(_linear(widths[-1], 1, spectral_norm))
        self.net = nn.Sequential(*layers)
        self.in_dim = in_dim

    def forward(self, z: Tensor) -> Tensor:
        """The energy ``E(z)``: ``(B, in_dim)`` (flattened) -> ``(B,)``, lower = more probable."""
        return self.net(z.flatten(1)).squeeze(1)


def _linear(fan_in: int, fan_out: int, spectral_norm: bool) -> nn.Module:
    layer = nn.Linear(fan_in, fan_out)
    return nn.utils.parametrizations.spectral_norm(layer) if spectral_norm else layer
