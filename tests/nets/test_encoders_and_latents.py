"""Inference networks (the diagonal-Gaussian contract, Dual-MCMC's conv encoder, the ladder
encoder) and latent groups (a flat latent split into per-layer groups)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lebm.config import build, to_config
from lebm.models import LatentGroups, TiltedGaussianPrior
from lebm.nets import ConvEncoder, DiagonalGaussian, EnergyMLP, LadderEncoder, MLPEncoder


def test_diagonal_gaussian_agrees_with_torch_distributions() -> None:
    mean, logvar = torch.randn(6, 3), torch.randn(6, 3)
    q = DiagonalGaussian(mean, logvar)
    reference = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    z = torch.randn(6, 3)
    assert torch.allclose(q.log_prob(z), reference.log_prob(z).sum(1), atol=1e-5)
    standard = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    kl = torch.distributions.kl_divergence(reference, standard).sum(1)
    assert torch.allclose(q.kl_to_standard_normal(), kl, atol=1e-5)


def test_reparameterised_samples_have_the_moments_and_the_gradients() -> None:
    mean = torch.tensor([[1.0, -2.0]], requires_grad=True)
    logvar = torch.tensor([[0.0, 2 * torch.log(torch.tensor(0.5)).item()]], requires_grad=True)
    q = DiagonalGaussian(mean.expand(20000, -1), logvar.expand(20000, -1))
    z = q.rsample(torch.Generator().manual_seed(0))
    assert torch.allclose(z.mean(0), torch.tensor([1.0, -2.0]), atol=0.02)
    assert torch.allclose(z.std(0), torch.tensor([1.0, 0.5]), atol=0.02)
    z.sum().backward()
    assert mean.grad is not None and logvar.grad is not None


def test_conv_encoder_layouts_follow_the_official_nets() -> None:
    """CIFAR-10: 3x3 stride-1 conv then three 4x4 stride-2 convs, 128-256-512-1024; CelebA-64: four
    4x4 stride-2 convs; a bias-free trunk; two conv heads to nz = 128, with a bias."""
    cifar = ConvEncoder(128, channels=3, image_size=32, nif=128, stem=True)
    convs = [m for m in cifar.features if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (3, 128, 3, 1),
        (128, 256, 4, 2),
        (256, 512, 4, 2),
        (512, 1024, 4, 2),
    ]
    assert all(c.bias is None for c in convs) and cifar.mean_head.kernel_size == (4, 4)
    for head in (cifar.mean_head, cifar.logvar_head):
        assert (head.in_channels, head.out_channels, head.kernel_size, head.stride) == (1024, 128, (4, 4), (1, 1))
        assert head.bias is not None and head.bias.shape == (128,)
    celeba = ConvEncoder(128, channels=3, image_size=64, nif=128, stem=False)
    convs = [m for m in celeba.features if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == [
        (3, 128, 2),
        (128, 256, 2),
        (256, 512, 2),
        (512, 1024, 2),
    ]


@pytest.mark.parametrize("size,channels", [(8, 1), (28, 1), (32, 3)])
def test_conv_encoder_small_variants_give_one_gaussian_per_image(size: int, channels: int) -> None:
    encoder = ConvEncoder(16, channels=channels, image_size=size, nif=8)
    q = encoder(torch.randn(5, channels, size, size))
    assert q.mean.shape == (5, 16) and q.logvar.shape == (5, 16)


def test_conv_encoder_heads_add_their_bias() -> None:
    """The heads' biases are used: the mean and log-variance move by exactly the bias; without
    ``head_bias`` there are none."""
    encoder = ConvEncoder(4, channels=1, image_size=8, nif=4)
    x = torch.randn(3, 1, 8, 8)
    before = encoder(x)
    with torch.no_grad():
        encoder.mean_head.bias.add_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
        encoder.logvar_head.bias.add_(-0.5)
    after = encoder(x)
    assert torch.allclose(after.mean - before.mean, torch.tensor([1.0, 2.0, 3.0, 4.0]).expand(3, -1), atol=1e-6)
    assert torch.allclose(after.logvar - before.logvar, torch.full((3, 4), -0.5), atol=1e-6)
    plain = ConvEncoder(4, channels=1, image_size=8, nif=4, head_bias=False)
    assert plain.mean_head.bias is None and plain.logvar_head.bias is None
    assert not any(name.endswith("bias") for name in plain.state_dict())


def test_conv_encoder_loads_state_dicts_saved_without_head_biases() -> None:
    """A state dict of the bias-free heads (lebm before ``head_bias``) loads strictly into an encoder
    with biases: zero biases, the same outputs as the net it was saved from; saved biases are kept."""
    old = ConvEncoder(4, channels=1, image_size=8, nif=4, head_bias=False)
    new = ConvEncoder(4, channels=1, image_size=8, nif=4)
    saved = old.state_dict()
    new.load_state_dict(saved)  # strict
    assert set(saved) == set(old.state_dict())  # the caller's dict is not changed
    assert torch.equal(new.mean_head.bias, torch.zeros(4)) and torch.equal(new.logvar_head.bias, torch.zeros(4))
    x = torch.randn(5, 1, 8, 8)
    q_old, q_new = old(x), new(x)
    assert torch.equal(q_old.mean, q_new.mean) and torch.equal(q_old.logvar, q_new.logvar)
    # inside a bigger module (a prefix), and with the biases present they are loaded as saved
    wrapper, source = nn.ModuleDict({"encoder": ConvEncoder(4, 1, 8, nif=4)}), nn.ModuleDict({"encoder": old})
    wrapper.load_state_dict(source.state_dict())
    assert torch.equal(wrapper["encoder"].mean_head.bias, torch.zeros(4))
    trained = ConvEncoder(4, channels=1, image_size=8, nif=4)
    new.load_state_dict(trained.state_dict())
    assert torch.equal(new.mean_head.bias, trained.mean_head.bias)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        ConvEncoder(4, 1, 8, nif=4, head_bias=False).load_state_dict(trained.state_dict())


def test_ladder_encoder_has_one_head_per_group_and_the_official_top_mlp() -> None:
    """The official SVHN model: conv levels 128-256-256-512 for z1..z4 (each with its own branch and
    trunk block), z5 from a 2048-1024-1024 MLP on the last trunk output."""
    encoder = LadderEncoder([10] * 5, channels=3, image_size=32, widths=[128, 256, 256, 512], top_hidden=[1024, 1024])
    top = [m for m in encoder.top_mlp if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in top] == [(2048, 1024), (1024, 1024)]
    assert [head.out_features for head in encoder.heads] == [20] * 5
    q = encoder(torch.randn(2, 3, 32, 32))
    assert q.mean.shape == (2, 50) and encoder.groups.sizes == [10] * 5


def test_ladder_groups_read_deeper_features_bottom_up() -> None:
    """Without separate branches (heads read the trunk), z_1 comes from the shallowest block:
    changing the second block leaves q(z_1|x) as it was."""
    encoder = LadderEncoder([2, 3], channels=1, image_size=8, widths=[4, 8], separate_branches=False)
    x = torch.randn(3, 1, 8, 8)
    before = encoder(x)
    with torch.no_grad():
        for p in encoder.trunk[1].parameters():
            p.add_(1.0)
    after = encoder(x)
    assert torch.equal(after.mean[:, :2], before.mean[:, :2])
    assert not torch.allclose(after.mean[:, 2:], before.mean[:, 2:])


def test_encoders_rebuild_from_their_configs() -> None:
    for encoder in (MLPEncoder([2], 3, hidden=8), ConvEncoder(4, 1, 8, nif=4), LadderEncoder([2, 2], 1, 8, [4, 4])):
        assert type(build(to_config(encoder))) is type(encoder)


def test_latent_groups_split_join_and_replace() -> None:
    groups = LatentGroups([2, 3, 1])
    z = torch.arange(12.0).view(2, 6)
    parts = groups.split(z)
    assert [p.shape[1] for p in parts] == [2, 3, 1] and torch.equal(parts[1], z[:, 2:5])
    assert torch.equal(groups.join(parts), z)
    replaced = groups.replace(z, "z2", torch.zeros(3))
    assert torch.equal(replaced[:, 2:5], torch.zeros(2, 3)) and torch.equal(replaced[:, :2], z[:, :2])
    assert groups.index(-1) == 2 and groups.total == 6
    with pytest.raises(ValueError, match=r"flat latent \(B, 6\)"):
        groups.split(torch.zeros(2, 5))
    with pytest.raises(KeyError, match="no latent group"):
        groups.index("z9")


def test_a_joint_tilted_prior_is_the_tilted_prior_plus_a_layout() -> None:
    prior = TiltedGaussianPrior(6, EnergyMLP(6, hidden=8), groups=[2, 3, 1])
    assert prior.groups.sizes == [2, 3, 1]
    assert build(to_config(prior)).groups.sizes == [2, 3, 1]
    with pytest.raises(ValueError, match="add up to 5"):
        TiltedGaussianPrior(6, EnergyMLP(6, hidden=8), groups=[2, 3])
