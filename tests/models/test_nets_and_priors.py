"""Networks, decoders and priors: shapes, the paper's layouts, energies and sampling."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lebm.models import GaussianPrior, TiltedGaussianPrior
from lebm.nets import DCGANGenerator, EnergyMLP, GaussianDecoder, MLPGenerator
from lebm.nets.layers import LatentProjection
from lebm.samplers import Langevin


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3), (64, 3), (128, 3)])
def test_dcgan_generator_output_shapes(size: int, channels: int) -> None:
    g = DCGANGenerator(latent_dim=10, channels=channels, image_size=size, ngf=8)
    x = g(torch.randn(2, 10))
    assert x.shape == (2, channels, size, size)
    assert x.abs().max() <= 1.0


def test_svhn_generator_matches_the_official_layout() -> None:
    convs = [m for m in DCGANGenerator(100, 3, 32, ngf=64).modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(100, 512), (512, 256), (256, 128), (128, 3)]
    assert [c.stride[0] for c in convs] == [1, 2, 2, 2]


def test_celeba128_generator_widths() -> None:
    convs = [m for m in DCGANGenerator(100, 3, 128, ngf=64).modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs] == [2048, 1024, 512, 256, 128, 3]


@pytest.mark.parametrize("kernel,bias", [(4, True), (7, True), (4, False)])
def test_latent_projection_computes_the_transposed_convolution(kernel: int, bias: bool) -> None:
    """The matrix-product first layer gives the transposed convolution's output and the same
    gradients to its input, weight and bias, in both memory formats, and loads its state dict."""
    torch.manual_seed(0)
    reference = nn.ConvTranspose2d(10, 6, kernel, 1, 0, bias=bias).double()
    fast = LatentProjection(10, 6, kernel, 1, 0, bias=bias).double()
    fast.load_state_dict(reference.state_dict())
    assert set(fast.state_dict()) == set(reference.state_dict())
    upstream = torch.randn(3, 6, kernel, kernel, dtype=torch.float64)
    for memory_format in (torch.contiguous_format, torch.channels_last):
        results = []
        for layer in (reference, fast):
            layer.to(memory_format=memory_format).zero_grad()
            z = torch.randn(3, 10, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
            z.requires_grad_(True)
            out = layer(z)
            (out * upstream).sum().backward()
            grads = [z.grad, layer.weight.grad] + ([layer.bias.grad] if bias else [])
            results.append((out, grads))
        (out_ref, grads_ref), (out_fast, grads_fast) = results
        torch.testing.assert_close(out_fast, out_ref)
        assert out_fast.is_contiguous(memory_format=memory_format)
        for grad_fast, grad_ref in zip(grads_fast, grads_ref, strict=True):
            torch.testing.assert_close(grad_fast, grad_ref)


def test_latent_projection_falls_back_to_the_convolution_off_its_shape() -> None:
    torch.manual_seed(0)
    reference = nn.ConvTranspose2d(4, 3, 4, 2, 1)
    fast = LatentProjection(4, 3, 4, 2, 1)
    fast.load_state_dict(reference.state_dict())
    for x in (torch.randn(2, 4, 1, 1), torch.randn(2, 4, 5, 5)):
        torch.testing.assert_close(fast(x), reference(x))
    unpadded = nn.ConvTranspose2d(4, 3, 4, 1, 0)
    fast_unpadded = LatentProjection(4, 3, 4, 1, 0)
    fast_unpadded.load_state_dict(unpadded.state_dict())
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(fast_unpadded(x), unpadded(x))


def test_dcgan_rejects_unsupported_sizes() -> None:
    with pytest.raises(ValueError, match="image_size"):
        DCGANGenerator(image_size=30)


def test_energy_mlp_layout_and_spectral_norm() -> None:
    net = EnergyMLP(100, hidden=200, depth=2, activation="gelu")
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(layer.in_features, layer.out_features) for layer in linears] == [(100, 200), (200, 200), (200, 1)]
    assert net(torch.randn(7, 100)).shape == (7,)
    sn = EnergyMLP(4, hidden=8, spectral_norm=True)
    assert all(hasattr(layer, "parametrizations") for layer in sn.modules() if isinstance(layer, nn.Linear))
    with pytest.raises(ValueError, match="activation"):
        EnergyMLP(4, activation="swishy")


def test_mlp_generator_shape() -> None:
    assert MLPGenerator(3, [1, 8, 8], hidden=16)(torch.randn(5, 3)).shape == (5, 1, 8, 8)


def test_gaussian_decoder_nll_is_the_log_density_up_to_a_constant() -> None:
    decoder = GaussianDecoder(nn.Identity(), sigma=0.3)
    x, z = torch.randn(6, 4), torch.randn(6, 4)
    exact = torch.distributions.Normal(z, 0.3).log_prob(x).sum(1)
    const = 4 * 0.5 * math.log(2 * math.pi * 0.09)
    assert torch.allclose(-decoder.nll(x, z), exact + const, atol=1e-5)
    assert torch.allclose(decoder.metrics(x, z)["mse"], (x - z).square().mean(1))


def test_gaussian_prior_energy_and_samples() -> None:
    prior = GaussianPrior(3, sigma=2.0)
    z = torch.randn(5, 3)
    assert torch.allclose(prior.energy(z), z.square().sum(1) / 8)
    samples = prior.sample(20000)
    assert samples.shape == (20000, 3)
    assert torch.allclose(samples.std(0), torch.full((3,), 2.0), atol=0.05)


class ShiftEnergy(nn.Module):
    """``E(z) = -w . z`` with fixed ``w``: the tilted prior is ``N(w sigma^2, sigma^2 I)``."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return -(z @ self.w)


def test_tilted_prior_energy_is_minus_the_log_density_of_the_tilted_gaussian() -> None:
    """exp(w.z) N(0, sigma^2 I) is N(w sigma^2, sigma^2 I): energy differences must be minus its
    log-density differences (the reference term included, the constant irrelevant)."""
    w, sigma = torch.tensor([1.0, 2.0]), 1.5
    prior = TiltedGaussianPrior(2, ShiftEnergy(w), sigma=sigma)
    z = torch.randn(6, 2)
    log_density = torch.distributions.Normal(w * sigma**2, sigma).log_prob(z).sum(1)
    assert torch.allclose(prior.energy(z) - prior.energy(z[:1]), -(log_density - log_density[:1]), atol=1e-5)


def test_tilted_prior_samples_follow_the_tilt() -> None:
    prior = TiltedGaussianPrior(2, ShiftEnergy(torch.tensor([1.0, -0.5])), sampler=Langevin(200, 0.3))
    samples = prior.sample(4000)
    assert torch.allclose(samples.mean(0), torch.tensor([1.0, -0.5]), atol=0.1)
    # the prior's own parameters are trainable again after sampling
    assert all(p.requires_grad for p in prior.parameters())
