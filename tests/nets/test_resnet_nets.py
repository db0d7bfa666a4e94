"""Dual-MCMC's ResNet networks: the SN-ResNet data-space energy and the SNGAN-style generator."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from lebm.nets.resnets import SNGANGenerator, SNResNetEnergy

T, F = True, False


def _convs(net: nn.Module) -> list[nn.Conv2d]:
    return [m for m in net.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize(
    "channels,size,widths,downsample",
    [
        (3, 32, (8, 8, 8, 8), (T, T, F, F)),  # CIFAR-10 layout, narrow
        (3, 64, (4, 8, 8, 16, 16), (T, T, T, T, T)),  # CelebA-64 layout, narrow
        (1, 8, (16, 32), (T, T)),  # 8 px digits
        (1, 28, (16, 32, 32), (T, T, F)),  # MNIST
    ],
)
def test_energy_output_shape(channels: int, size: int, widths: tuple, downsample: tuple) -> None:
    net = SNResNetEnergy(channels, size, widths, downsample)
    assert net.in_shape == (channels, size, size)
    energy = net(torch.randn(3, channels, size, size))
    assert energy.shape == (3,)
    assert torch.isfinite(energy).all()


@pytest.mark.parametrize(
    "latent_dim,channels,size,widths",
    [
        (16, 3, 32, (16, 8, 8, 8)),  # CIFAR-10 layout, narrow
        (16, 3, 64, (16, 16, 8, 8, 4)),  # CelebA-64 layout, narrow
        (4, 1, 8, (32, 16)),  # 8 px digits: 4 -> 8
        (8, 1, 28, (32, 16, 8)),  # MNIST: 7 -> 14 -> 28
    ],
)
def test_generator_output_shape_and_range(latent_dim: int, channels: int, size: int, widths: tuple) -> None:
    g = SNGANGenerator(latent_dim, channels, size, widths)
    x = g(torch.randn(2, latent_dim))
    assert x.shape == (2, channels, size, size)
    assert x.abs().max() <= 1.0
    assert x.std() > 0  # not a constant image
    assert g(torch.randn(3, latent_dim, 1, 1)).shape == (3, channels, size, size)


def test_generator_starts_at_7_for_28_pixels_and_4_otherwise() -> None:
    assert SNGANGenerator(8, 1, 28, (32, 16, 8)).linear.out_features == 7 * 7 * 32
    assert SNGANGenerator(8, 1, 8, (32, 16)).linear.out_features == 4 * 4 * 32


def test_energy_conv_layout() -> None:
    net = SNResNetEnergy(3, 32, (8, 16, 16, 16), (T, T, F, F), spectral_norm=False)
    layout = [[(c.in_channels, c.out_channels, c.kernel_size[0]) for c in _convs(block)] for block in net.blocks]
    assert layout == [
        [(3, 8, 3), (8, 8, 3), (3, 8, 1)],  # start block: main, main, 1x1 shortcut
        [(8, 16, 3), (16, 16, 3), (8, 16, 1)],  # widening, down-sampling block
        [(16, 16, 3), (16, 16, 3)],  # identity shortcut
        [(16, 16, 3), (16, 16, 3)],
    ]
    assert [isinstance(block.main[-1], nn.AvgPool2d) for block in net.blocks] == [True, True, False, False]
    assert isinstance(net.blocks[0].shortcut[0], nn.AvgPool2d)  # start block pools before its 1x1 conv
    assert isinstance(net.blocks[1].shortcut[-1], nn.AvgPool2d)  # the others pool after it
    assert isinstance(net.blocks[2].shortcut, nn.Identity)


def test_energy_blocks_are_residual() -> None:
    """With a block's main path silenced its output is the shortcut: identity, or pool + 1x1 conv."""
    net = SNResNetEnergy(2, 8, (4, 4), (T, F), spectral_norm=False)
    for block in net.blocks:
        nn.init.zeros_(block.main[-1].weight if isinstance(block.main[-1], nn.Conv2d) else block.main[-2].weight)
    x = torch.randn(2, 2, 8, 8)
    start = net.blocks[0]
    expected = nn.functional.conv2d(nn.functional.avg_pool2d(x, 2), start.shortcut[-1].weight)
    assert torch.allclose(start(x), expected, atol=1e-6)
    h = torch.randn(2, 4, 4, 4)
    assert torch.allclose(net.blocks[1](h), h)


def test_energy_spectral_norm_on_every_layer_and_no_bias() -> None:
    net = SNResNetEnergy(1, 28, (16, 32, 32), (T, T, F))
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 3 + 3 + 2 + 1  # start (2 + 1x1), down block (2 + 1x1), plain block, head
    assert all(parametrize.is_parametrized(m, "weight") for m in layers)
    assert all(m.bias is None for m in layers)
    plain = SNResNetEnergy(1, 28, (16, 32, 32), (T, T, F), spectral_norm=False)
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())
    assert all(m.bias is None for m in plain.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def test_energy_conv_weights_are_xavier_normal() -> None:
    conv = _convs(SNResNetEnergy(3, 8, (64, 64), (T, T), spectral_norm=False))[1]  # 64 -> 64, 3x3
    fan = 64 * 9
    assert conv.weight.std().item() == pytest.approx((2 / (fan + fan)) ** 0.5, rel=0.1)


def test_spectral_norm_bounds_the_weights() -> None:
    """Even with every raw weight blown up 10x, each layer's effective weight has spectral norm ~1."""
    net = SNResNetEnergy(1, 8, (16, 32), (T, T))
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        for layer in layers:
            raw = layer.parametrizations.weight.original if parametrize.is_parametrized(layer) else layer.weight
            raw.mul_(10.0)
    net.train()
    for _ in range(10):
        net(torch.randn(4, 1, 8, 8))
    with torch.no_grad():
        for layer in layers:
            sigma = torch.linalg.matrix_norm(layer.weight.flatten(1), ord=2).item()
            assert 0.9 <= sigma <= 1.05, f"{layer}: spectral norm {sigma}"


def test_energy_modes_differ_only_in_the_spectral_norms_power_iteration() -> None:
    """No BatchNorm, no dropout: without spectral norm, train and eval mode give the same energy;
    with it, train mode moves the power iteration's vectors and eval mode leaves them."""
    mode_dependent = (nn.modules.batchnorm._NormBase, nn.modules.dropout._DropoutNd)
    net = SNResNetEnergy(1, 8, (16, 32), (T, T))
    assert not any(isinstance(m, mode_dependent) for m in net.modules())
    plain = SNResNetEnergy(1, 8, (16, 32), (T, T), spectral_norm=False)
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(plain.train()(x), plain.eval()(x))
    with torch.no_grad():
        for layer in net.modules():
            if parametrize.is_parametrized(layer):
                layer.parametrizations.weight.original.mul_(1 + torch.rand_like(layer.parametrizations.weight.original))
    vectors = lambda: {k: v.clone() for k, v in net.state_dict().items() if k.endswith(("_u", "_v"))}  # noqa: E731
    before = vectors()
    net.eval()(x)
    assert all(torch.equal(before[k], v) for k, v in vectors().items())
    net.train()(x)
    moved = [k for k, v in vectors().items() if not torch.equal(before[k], v)]
    assert moved == [k for k, v in before.items() if v.numel() > 1]  # (a 1-entry u is always +-1)


def test_energy_is_per_example() -> None:
    net = SNResNetEnergy(1, 8, (16, 32), (T, T)).eval()
    x = torch.randn(4, 1, 8, 8)
    before = net(x)
    x2 = x.clone()
    x2[1] += torch.randn(1, 8, 8)
    after = net(x2)
    assert not torch.isclose(after[1], before[1])
    keep = [0, 2, 3]
    assert torch.allclose(after[keep], before[keep], atol=1e-6)


def test_energy_gradient_wrt_input_is_finite() -> None:
    net = SNResNetEnergy(1, 8, (16, 32), (T, T))
    x = torch.randn(3, 1, 8, 8, requires_grad=True)
    (grad,) = torch.autograd.grad(net(x).sum(), x)
    assert grad.shape == x.shape
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0


def test_generator_init() -> None:
    g = SNGANGenerator(8, 3, 8, (256, 256))
    bns = [m for m in g.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 3  # two in the up-block, one in the head
    wide = bns[0].weight.detach()
    assert (wide < 0).any()
    assert wide.std().item() == pytest.approx(1.0, abs=0.2)
    assert wide.mean().abs() < 0.3
    assert all((bn.bias == 0).all() for bn in bns)
    convs = _convs(g)
    assert all(c.bias is not None for c in convs)
    conv = g.blocks[0].main[3]  # 256 -> 256, 3x3
    assert conv.weight.std().item() == pytest.approx((2 / (2 * 256 * 9)) ** 0.5, rel=0.1)


def test_generator_conv_layout() -> None:
    g = SNGANGenerator(8, 3, 16, (16, 8, 4))
    layout = [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in _convs(g)]
    assert layout == [(16, 8, 3), (8, 8, 3), (16, 8, 1), (8, 4, 3), (4, 4, 3), (8, 4, 1), (4, 3, 3)]
    assert g.blocks[0].shortcut[0].mode == "bilinear"


@pytest.mark.parametrize("align_corners", [True, False])
def test_generator_blocks_are_residual(align_corners: bool) -> None:
    """With an up-block's main path silenced its output is the up-sampled, 1x1-convolved input."""
    g = SNGANGenerator(4, 1, 8, (4, 2), align_corners=align_corners)
    block = g.blocks[0]
    nn.init.zeros_(block.main[-1].weight)
    nn.init.zeros_(block.main[-1].bias)
    h = torch.randn(2, 4, 4, 4)
    up = nn.functional.interpolate(h, scale_factor=2, mode="bilinear", align_corners=align_corners)
    conv = block.shortcut[-1]
    assert torch.allclose(block(h), nn.functional.conv2d(up, conv.weight, conv.bias), atol=1e-6)


def _up_sampled_by_the_main_path(g: SNGANGenerator, h: torch.Tensor) -> torch.Tensor:
    """What the first up-block's main path feeds its first conv: BN - ReLU - up, recorded."""
    seen: list[torch.Tensor] = []
    handle = g.blocks[0].main[3].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    g.blocks[0](h)
    handle.remove()
    return seen[0]


def test_generator_upsamples_bilinear_with_aligned_corners_as_the_official_code() -> None:
    """The official ``_GenBlock``: ``F.interpolate(h, scale_factor=2, mode='bilinear',
    align_corners=True)`` in the main path and the shortcut; corner pixels are kept exactly."""
    g = SNGANGenerator(4, 1, 8, (4, 2))
    assert g.align_corners is True
    upsamplers = [m for m in g.modules() if isinstance(m, nn.Upsample)]
    assert len(upsamplers) == 2 and all(m.mode == "bilinear" and m.align_corners for m in upsamplers)
    # the main path's up-sampled map has its input's corner values (align_corners=False blends them)
    h = torch.randn(2, 4, 4, 4)
    with torch.no_grad():
        g.train()
        inner = nn.functional.relu(g.blocks[0].main[0](h))
        up = _up_sampled_by_the_main_path(g, h)
    corners = (slice(None), slice(None), [0, 0, -1, -1], [0, -1, 0, -1])
    assert torch.allclose(up[corners], inner[corners], atol=1e-6)
    expected = nn.functional.interpolate(inner, scale_factor=2, mode="bilinear", align_corners=True)
    assert torch.allclose(up, expected, atol=1e-6)
    old = nn.functional.interpolate(inner, scale_factor=2, mode="bilinear", align_corners=False)
    assert not torch.allclose(up, old, atol=1e-3)


@pytest.mark.parametrize("align_corners", [True, False])
def test_generator_upsamples_on_channels_last_memory_with_nn_upsample_values(align_corners: bool) -> None:
    """CPU. Each up-sampling hands its convolution a channels-last map (CUDA's NCHW bilinear kernel
    runs one thread per output pixel; its NHWC kernel one per element), with ``nn.Upsample``'s
    values and input gradients."""
    g = SNGANGenerator(4, 1, 8, (16, 16), align_corners=align_corners)
    up = _up_sampled_by_the_main_path(g, torch.randn(2, 16, 4, 4))
    assert up.is_contiguous(memory_format=torch.channels_last) and not up.is_contiguous()
    reference = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=align_corners)
    h = torch.randn(3, 16, 5, 5, requires_grad=True)
    weights = torch.randn(3, 16, 10, 10)
    ours = g.blocks[0].shortcut[0](h)
    (grad,) = torch.autograd.grad((ours * weights).sum(), h)
    theirs = reference(h)
    (reference_grad,) = torch.autograd.grad((theirs * weights).sum(), h)
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert torch.allclose(grad, reference_grad, atol=1e-5)


def test_generator_align_corners_is_an_option_and_can_be_switched() -> None:
    torch.manual_seed(0)
    aligned = SNGANGenerator(4, 1, 8, (8, 4))
    torch.manual_seed(0)
    half_pixel = SNGANGenerator(4, 1, 8, (8, 4), align_corners=False)
    assert all(not m.align_corners for m in half_pixel.modules() if isinstance(m, nn.Upsample))
    z = torch.randn(6, 4)
    with torch.no_grad():
        assert not torch.allclose(aligned(z), half_pixel(z), atol=1e-4)  # same weights, other grid
        aligned.set_align_corners(False)
        assert aligned.align_corners is False
        assert torch.equal(aligned(z), half_pixel(z))


def test_bad_arguments_name_the_option() -> None:
    with pytest.raises(ValueError, match="downsample"):
        SNResNetEnergy(widths=(8, 8, 8), downsample=(T, T))
    with pytest.raises(ValueError, match="widths"):
        SNResNetEnergy(widths=(), downsample=())
    with pytest.raises(ValueError, match="image_size"):
        SNResNetEnergy(image_size=30, widths=(8, 8), downsample=(T, T))
    with pytest.raises(ValueError, match="needs 4 widths for image_size 32"):
        SNGANGenerator(image_size=32, widths=(8, 8))
    with pytest.raises(ValueError, match="needs 3 widths for image_size 28"):
        SNGANGenerator(image_size=28, widths=(8, 8, 8, 8))
    with pytest.raises(ValueError, match="image_size"):
        SNGANGenerator(image_size=30, widths=(8, 8, 8, 8))


def test_official_cifar10_sizes_build() -> None:
    energy = SNResNetEnergy()
    conv3, conv1 = 512 * 512 * 9, 512 * 512
    expected = (3 * 512 * 9 + conv3 + 3 * 512) + (2 * conv3 + conv1) + 2 * (2 * conv3) + 512
    assert sum(p.numel() for p in energy.parameters()) == expected
    g = SNGANGenerator()
    assert g.linear.in_features == 128 and g.linear.out_features == 4 * 4 * 512
    assert len(g.blocks) == 3
    assert _convs(g)[-1].out_channels == 3
