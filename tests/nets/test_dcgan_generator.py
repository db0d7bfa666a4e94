"""DCGANGenerator's layouts (CPU): LEBM's (the default) and DAMC's official ones (an 8x8 first map,
a 3x3 stride-1 output conv, PyTorch's initialisation)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lebm.nets import DCGANGenerator


def layers(net: DCGANGenerator) -> list[tuple[int, int, int, int]]:
    """``(in, out, kernel, stride)`` of each transposed conv, in order."""
    convs = [m for m in net.modules() if isinstance(m, nn.ConvTranspose2d)]
    return [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs]


def test_lebms_layouts_are_the_default() -> None:
    assert layers(DCGANGenerator(100, 3, 32, ngf=64)) == [
        (100, 512, 4, 1),
        (512, 256, 4, 2),
        (256, 128, 4, 2),
        (128, 3, 4, 2),
    ]
    assert layers(DCGANGenerator(100, 1, 28, ngf=64)) == [(100, 256, 7, 1), (256, 128, 4, 2), (128, 1, 4, 2)]


@pytest.mark.parametrize(
    ("settings", "expected", "shape"),
    [
        (  # CIFAR-10: ngf 128, an 8x8 first map, a 3x3 output conv
            {"latent_dim": 128, "channels": 3, "image_size": 32, "ngf": 128, "first_size": 8, "last_layer": "same"},
            [(128, 1024, 8, 1), (1024, 512, 4, 2), (512, 256, 4, 2), (256, 3, 3, 1)],
            (3, 32, 32),
        ),
        (  # MNIST: ngf 128, a 7x7 first map, a 3x3 output conv
            {"latent_dim": 8, "channels": 1, "image_size": 28, "ngf": 128, "last_layer": "same"},
            [(8, 1024, 7, 1), (1024, 512, 4, 2), (512, 256, 4, 2), (256, 1, 3, 1)],
            (1, 28, 28),
        ),
    ],
)
def test_damcs_official_layouts(settings: dict, expected: list, shape: tuple) -> None:
    net = DCGANGenerator(**settings, init="default")
    assert layers(net) == expected
    assert net(torch.randn(2, settings["latent_dim"])).shape == (2, *shape)


def test_the_default_initialisation_is_pytorchs_not_xaviers() -> None:
    torch.manual_seed(0)
    xavier = DCGANGenerator(16, 1, 8, ngf=16)
    torch.manual_seed(0)
    default = DCGANGenerator(16, 1, 8, ngf=16, init="default")
    first = lambda net: next(m for m in net.modules() if isinstance(m, nn.ConvTranspose2d)).weight  # noqa: E731
    fan_in = first(default).shape[1] * 16  # PyTorch's bound uses the transposed weight's second dimension
    assert first(default).abs().max() <= 1 / fan_in**0.5 + 1e-6
    assert not torch.equal(first(default), first(xavier))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"last_layer": "down"}, "last_layer"),
        ({"init": "kaiming"}, "init"),
        ({"image_size": 24}, "power of two"),
        ({"image_size": 32, "first_size": 3}, "power of two"),
    ],
)
def test_bad_layouts_are_refused_in_one_line(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        DCGANGenerator(**settings)
    assert "\n" not in str(raised.value)
